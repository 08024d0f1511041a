"""Dependency records: every resource a render loaded, and the check that none of them changed.

While a chunk renders, the composition server records each file the page asked for (path relative to the
composition's folder, size and sha256; a file asked for and missing is recorded as absent), and for a
composition loaded from a URL each response from that origin is recorded by URL with its ETag or content
hash. The chunk's done-manifest stores that list. A chunk is complete when its settings digest matches and
every recorded dependency still has the same content (see docs/ARCHITECTURE.md, "Incrementality").

Files are hashed at most once per process while their size and mtime stay the same (:data:`FILE_HASHER`);
URLs are fetched at most once per :class:`DependencyChecker`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

URL_TIMEOUT_S = 30.0


class Dependency(BaseModel):
    """One resource a render loaded: a file of the composition's folder (`path`) or a URL (`url`).

    `size` is None when the file did not exist (the page asked for it and got a 404): creating it later
    changes what the page would load, so the chunk renders again.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    path: str | None = None
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None

    @property
    def key(self) -> str:
        return f"path:{self.path}" if self.path is not None else f"url:{self.url}"


def missing_files_warning(dependencies: Iterable[Dependency]) -> str | None:
    """One line naming the files a page asked for that the composition's folder does not have (recorded with
    no size), or None: a typo in a path renders without the picture or sound it names, silently otherwise."""
    missing = sorted({dep.path for dep in dependencies if dep.path is not None and dep.size is None})
    if not missing:
        return None
    named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return f"warning: the page asked for files its folder does not have ({named}): the video renders without them"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileHasher:
    """sha256 of local files, each computed at most once while its size and mtime stay the same."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()
        self.hashed = 0  # files actually read (tests check that unrelated files never are)

    def fingerprint(self, path: Path) -> tuple[int, str] | None:
        """`(size, sha256)` of a regular file, or None when it is missing or not a file."""
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = os.fspath(path)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return stat.st_size, cached[2]
        try:
            sha = sha256_file(path)
        except OSError:
            return None
        with self._lock:
            self._cache[key] = (stat.st_size, stat.st_mtime_ns, sha)
            self.hashed += 1
        return stat.st_size, sha


#: One per process: a warm worker or a long client run hashes each file version once.
FILE_HASHER = FileHasher()


def _inside(root: Path, rel: str) -> Path | None:
    """`root/rel` when `rel` is a plain relative path that stays inside `root` after resolving links."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    candidate = root / pure
    try:
        real = candidate.resolve()
        real.relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return candidate


def file_dependency(root: Path, rel: str, hasher: FileHasher = FILE_HASHER) -> Dependency:
    """The current state of `root/rel` as a dependency record (absent when missing or outside `root`)."""
    path = _inside(root, rel)
    found = hasher.fingerprint(path) if path is not None else None
    if found is None:
        return Dependency(path=rel)
    return Dependency(path=rel, size=found[0], sha256=found[1])


def url_dependency(url: str, timeout: float = URL_TIMEOUT_S) -> Dependency:
    """The current state of `url`: its ETag when the server sends one, else the sha256 of its body; an
    unreachable URL or an HTTP error is recorded as absent."""
    import httpx

    try:
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            response = client.get(url)
    except httpx.HTTPError:
        return Dependency(url=url)
    if response.status_code >= 400:
        return Dependency(url=url)
    etag = response.headers.get("etag")
    return Dependency(
        url=url,
        size=len(response.content),
        etag=etag,
        sha256=None if etag else hashlib.sha256(response.content).hexdigest(),
    )


def same_content(recorded: Dependency, current: Dependency) -> bool:
    """Whether `current` has the content `recorded` saw (ETag when both have one, else size and sha256)."""
    if recorded.size is None or current.size is None:
        return recorded.size is None and current.size is None
    if recorded.etag and current.etag:
        return recorded.etag == current.etag
    return recorded.size == current.size and recorded.sha256 == current.sha256


class DependencyChecker:
    """Answers "has any of these dependencies changed?" for one resolved composition.

    One checker serves one run: each file or URL is looked at once (a run sees one snapshot), so checking
    10,000 chunks that load the same five files costs five stats and at most five hashes."""

    def __init__(self, root: Path | None, hasher: FileHasher = FILE_HASHER) -> None:
        self.root = root
        self.hasher = hasher
        self._current: dict[str, Dependency] = {}
        self._lock = threading.Lock()

    def current(self, recorded: Dependency) -> Dependency:
        """The present state of what `recorded` names (computed once per checker)."""
        key = recorded.key
        with self._lock:
            cached = self._current.get(key)
        if cached is None:
            cached = self._look(recorded)
            with self._lock:
                self._current[key] = cached
        return cached

    def _look(self, recorded: Dependency) -> Dependency:
        if recorded.path is not None:
            if self.root is None:
                return Dependency(path=recorded.path)
            return file_dependency(self.root, recorded.path, self.hasher)
        assert recorded.url is not None
        return url_dependency(recorded.url)

    def unchanged(self, dependencies: Iterable[Dependency]) -> bool:
        """True when every recorded dependency still has the same content."""
        return all(same_content(dep, self.current(dep)) for dep in dependencies)
