"""The artifact store: chunk outputs and their done-manifests in a folder or any fsspec URL.

A chunk is complete when its output exists together with a done-manifest (`<output>.done.json`) whose
digest matches the chunk digest, whose size matches the output, and whose recorded dependencies (what the
chunk's render loaded) are all unchanged (see :mod:`helios_kit.composition.deps`). Commits are ordered so that a reader
never takes a half-written chunk for done: the old manifest is removed first, the output is uploaded under
a unique temporary key and moved to its final key (on S3, whose PUT is atomic, straight to its final key:
no copy, no temporary object), and the manifest is written last (itself through a temporary key). Local
folders, `s3://`, `gs://`, `memory://` and any other fsspec URL share this code, so local and remote runs
share one notion of done.

Encoders are deterministic (same frames and settings → same bytes), so two workers committing the same
chunk at once (at-least-once invocation) leave one valid chunk whichever wins.

In a local store every path is checked after resolving symlinks: a symlink in the job folder
(`chunks -> /elsewhere`) never lets an output, a manifest or the merged output land outside the store root;
such a path is refused with one line naming it (:meth:`ArtifactStore.check_confined` checks a job's outputs
before anything renders).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from helios_kit.composition.deps import Dependency, DependencyChecker, sha256_file
from helios_kit.composition.locations import is_local, url_to_fs
from helios_kit.composition.media import MediaElement
from helios_kit.composition.resolve import fetch_file
from helios_kit.done_index import DoneIndex, index_rel, listed_md5, vouched
from helios_kit.done_index import decode as decode_index
from helios_kit.done_index import encode as encode_index
from helios_kit.errors import StoreError, describe
from helios_kit.protocol import WireModel
from helios_kit.spec import MANIFEST_SUFFIX

#: Version 2 added the dependency list; older manifests never count as complete.
MANIFEST_VERSION = 2
#: A temporary object younger than this may belong to a commit still in flight: sweeps leave it.
TEMPORARY_GRACE_S = 600.0
#: Seconds an object store found writable by this process is not probed again (see check_writable).
WRITABLE_FOR_S = 300.0
_writable: dict[str, float] = {}
#: Connections to S3 one store's filesystem keeps: a fan-out's lease and manifest requests run at once.
S3_CONNECTIONS = 128
log = logging.getLogger("helios.store")
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")


def _is_temporary(name: str) -> bool:
    """A commit's temporary object, or a write probe (see `commit` and `check_writable`)."""
    return bool(_TEMPORARY.search(name)) or (name.startswith(".helios-probe-") and name.endswith(".tmp"))


def _modified_at(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch at which an fsspec listing entry last changed (None when it does not say)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return None


class DoneManifest(WireModel):
    """Proof that an output is complete: what produced it and what it must look like."""

    version: int = MANIFEST_VERSION
    job_id: str
    chunk_id: int | None = None
    digest: str
    start_frame: int | None = None
    frame_count: int
    size: int
    sha256: str
    created_at: datetime
    producer: str = ""
    #: What the render loaded (files of the composition's folder, or URLs) with their content hashes.
    dependencies: list[Dependency] = []
    #: Media elements the page had shown by the chunk's last frame (None: not recorded).
    media_seen: int | None = None
    #: Those elements, as the audio mix reads them (None: not recorded): the merge mixes the soundtrack from
    #: the last chunk's (its page stepped every frame from 0 to the job's end).
    media: list[MediaElement] | None = None
    #: Resources the chunk's page could not load, '<url> (<reason>)' (the merge names them once for the job).
    failed_loads: list[str] = []


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is s3fs' S3 filesystem (its own requests are used where fsspec's generic ones cost more)."""
    return type(fs).__name__ == "S3FileSystem"


def read_bytes(fs: fsspec.AbstractFileSystem, remote: str) -> bytes:
    """The whole content of one remote file (thread-safe on every filesystem, see :func:`download`). On S3
    one GET: s3fs would first ask for the size (a HEAD, and a listing when the object is missing)."""
    if is_s3(fs):
        return fs.cat_file(remote, max_concurrency=1)
    return fs.cat_file(remote)


def object_exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether the object at `path` exists, fresh (no cached listing). On S3 one HEAD: s3fs's `exists` also
    lists the key as a folder when the object is missing."""
    if not is_s3(fs):
        fs.invalidate_cache(path)
        return bool(fs.exists(path))
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return False
    return True


def manifest_bytes(manifest: DoneManifest) -> bytes:
    """The bytes a commit writes for `manifest` (a worker reports them in its result: the done index)."""
    return manifest.model_dump_json(by_alias=True, indent=2).encode()


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def _parse_manifest(data: bytes) -> DoneManifest | None:
    try:
        return DoneManifest.model_validate_json(data)
    except ValidationError:
        return None


def manifest_current(manifest: DoneManifest, digest: str, checker: DependencyChecker | None = None) -> bool:
    """A manifest of this format for `digest` whose recorded dependencies (given a `checker`) are unchanged."""
    if manifest.version != MANIFEST_VERSION or manifest.digest != digest:
        return False
    return checker is None or checker.unchanged(manifest.dependencies)


class ArtifactStore:
    """Chunk outputs and manifests under one root (a local folder or an fsspec URL)."""

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        text = os.fspath(url)
        self.is_local = is_local(text)
        if self.is_local:
            text = text.removeprefix("file://")
            self.url = os.path.abspath(text)
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file", auto_mkdir=True)
            self.root = self.url
            self._real_root = os.path.realpath(self.root)  # outputs must resolve inside it
            self._real_folders: dict[str, str] = {}
        else:
            self.url = text.rstrip("/")
            if self.url.startswith("s3://"):  # a run's threads share one connection pool (s3fs default: 10)
                config = {"max_pool_connections": S3_CONNECTIONS, **(storage_options.get("config_kwargs") or {})}
                storage_options = {**storage_options, "config_kwargs": config}
            try:
                self.fs, self.root = url_to_fs(self.url, **storage_options)
            except (ImportError, ValueError) as error:
                raise StoreError(f"store {self.url}: {error}", retryable=False) from None  # unknown scheme
            self.root = self.root.rstrip("/")
        # a run's snapshot of an object store (see preload): manifest bytes (None: absent) and object sizes
        self._snapshot: dict[str, bytes | None] = {}
        self._sizes: dict[str, int] = {}
        self._listings: dict[str, list[dict[str, Any]]] = {}  # folder → the snapshot's listing of it
        # the done index (helios_kit.done_index): manifests by rel as the index held them, and as this run knows them
        self._indexed: dict[str, str] = {}
        self._known: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- paths -----------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """The filesystem path of `rel` (relative to the store root) for `self.fs`; for a local store the
        real path (symlinks resolved), refused with a StoreError when it leaves the store root."""
        if self.is_local:
            return self._confined(rel)
        return f"{self.root}/{rel}" if self.root else rel

    def _confined(self, rel: str) -> str:
        """The real path of `rel`: its folder resolved once per store (chunk outputs share a few folders),
        its last part resolved only when it is a link; StoreError when it leaves the root."""
        root = self._real_root
        folder, name = os.path.split(rel)
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            real_folder = os.path.realpath(os.path.join(self.root, folder))
            self._real_folders[folder] = real_folder
        real = os.path.join(real_folder, name) if name else real_folder
        if os.path.islink(real):
            real = os.path.realpath(real)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise StoreError(
                f"store {self.url}: {rel} resolves to {real}, outside the store (a symlink leads out of it)",
                retryable=False,
            )
        return real

    def check_confined(self, rels: list[str] | tuple[str, ...]) -> None:
        """Refuse (StoreError naming the first offender) when any of `rels` or its done-manifest would land
        outside a local store once symlinks are resolved. Nothing to check for object stores."""
        if not self.is_local:
            return
        for rel in rels:
            self.path(rel)
            self.path(self.manifest_name(rel))

    def uri(self, rel: str) -> str:
        """A human-readable location of `rel`: a local path or a URL."""
        return os.path.join(self.url, rel) if self.is_local else f"{self.url}/{rel}"

    def local_path(self, rel: str) -> Path | None:
        """The local file of `rel` when the store is a local folder, else None."""
        return Path(self.path(rel)) if self.is_local else None

    @staticmethod
    def manifest_name(rel: str) -> str:
        return rel + MANIFEST_SUFFIX

    # -- reading ---------------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        path = self.path(rel)
        try:
            return bool(self.fs.exists(path))
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot read {rel}: {error}") from None

    def refresh(self) -> None:
        """Forget cached listings (object stores): another worker may have committed since we looked."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def read_manifest(self, rel: str) -> DoneManifest | None:
        """The manifest of `rel`, or None when it is missing or unreadable (treated as not done)."""
        path = self.path(self.manifest_name(rel))
        if path in self._snapshot:
            data = self._snapshot[path]
            return None if data is None else _parse_manifest(data)
        self.refresh()
        try:
            data = read_bytes(self.fs, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot read manifest of {rel}: {error}") from None
        text = _text(data)
        if text is not None:  # the store's own bytes: the done index may keep them (see save_index)
            self._known[self.manifest_name(rel)] = text
        try:
            return DoneManifest.model_validate_json(data)
        except ValidationError:
            return None

    def is_complete(self, rel: str, digest: str, checker: DependencyChecker | None = None) -> bool:
        """True when `rel` exists with a current manifest for `digest` and the size that manifest records,
        and (given a `checker`) every dependency the manifest records is unchanged."""
        manifest = self.read_manifest(rel)
        if manifest is None or not manifest_current(manifest, digest, checker):
            return False
        path = self.path(rel)
        if path in self._sizes:
            return self._sizes[path] == manifest.size
        try:
            size = self.fs.size(path)
        except FileNotFoundError:
            return False
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot read {rel}: {error}") from None
        return size == manifest.size

    # -- a run's snapshot -------------------------------------------------------------------------------
    def preload(self, rels: Iterable[str], job_id: str | None = None) -> None:
        """Snapshot an object store for `rels` in a few requests made at once: one listing of each of their
        folders (sizes, which manifests exist, their checksums) and, given the `job_id`, the job's done index
        (helios_kit.done_index); then the manifests present that the index does not vouch for, fetched
        concurrently (fsspec's many-path `cat`). :meth:`read_manifest` and :meth:`is_complete` answer from it
        until :meth:`forget` (the run calls it before attempting a chunk; commits and deletes do it
        themselves). Nothing to do for a local folder."""
        if self.is_local:
            return
        rels = list(rels)
        self.refresh()
        listed: dict[str, dict[str, Any]] = {}
        folders = sorted({self.path(rel).rpartition("/")[0] for rel in rels})
        try:
            with ThreadPoolExecutor(len(folders) + 1, thread_name_prefix="helios-preload") as pool:
                index = pool.submit(self._read_index, job_id) if job_id is not None else None
                listings = list(pool.map(self._list_folder, folders))
                indexed = index.result() if index is not None else None
            for folder, entries in zip(folders, listings, strict=True):
                if entries is not None:
                    self._listings[folder] = entries
                    listed.update({info["name"]: info for info in entries})
            self._indexed = dict(indexed.manifests) if indexed is not None else {}
            wanted = [self.path(self.manifest_name(rel)) for rel in rels]
            vouched_for: dict[str, bytes] = {}
            for rel in rels:
                manifest_rel = self.manifest_name(rel)
                info = listed.get(self.path(manifest_rel))
                data = vouched(self._indexed.get(manifest_rel), listed_md5(info)) if info else None
                if data is not None:
                    vouched_for[self.path(manifest_rel)] = data
            present = [path for path in wanted if path in listed and path not in vouched_for]
            fetched = {**vouched_for, **(self.fs.cat(present, on_error="return") if present else {})}
        except Exception as error:  # a snapshot is an optimization: without one, each check asks the store
            log.debug("store %s: no snapshot: %s", self.url, describe(error))
            return
        for rel in rels:
            path = self.path(self.manifest_name(rel))
            data = fetched.get(path)
            self._snapshot[path] = data if isinstance(data, bytes) else None
            text = _text(data) if isinstance(data, bytes) else None
            if text is not None:
                self._known[self.manifest_name(rel)] = text
        for rel in rels:
            path = self.path(rel)
            if path in listed:
                self._sizes[path] = int(listed[path].get("size") or 0)
            elif self._snapshot.get(self.path(self.manifest_name(rel))) is not None:
                self._snapshot[self.path(self.manifest_name(rel))] = None  # a manifest without its output

    def _list_folder(self, folder: str) -> list[dict[str, Any]] | None:
        """One listing of `folder` (None when there is no such folder)."""
        try:
            return list(self.fs.ls(folder, detail=True))
        except FileNotFoundError:
            return None

    # -- the done index ----------------------------------------------------------------------------------
    def _read_index(self, job_id: str) -> DoneIndex | None:
        """The job's done index as the store holds it now (None: none, or unreadable: it is only a cache)."""
        try:
            data = read_bytes(self.fs, self.path(index_rel(job_id)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as error:
            log.debug("store %s: cannot read the done index of %s: %s", self.url, job_id, describe(error))
            return None
        index = decode_index(data)
        return index if index is not None and index.job_id == job_id else None

    def known_manifest(self, rel: str) -> str | None:
        """The done-manifest of `rel` exactly as this instance last read or wrote it (None when it did not)."""
        return self._known.get(self.manifest_name(rel))

    def remember_manifest(self, rel: str, text: str) -> None:
        """A done-manifest of `rel` as a worker reported writing it (for the done index; verified when read)."""
        self._known[self.manifest_name(rel)] = text

    def save_index(self, job_id: str, rels: Iterable[str]) -> bool:
        """Write the job's done index when this run knows manifests of `rels` that the index did not hold
        (merged with the index as it is now: other runners may have written theirs). True when written.
        Object stores only; a failure is logged, never raised: the index is a cache."""
        if self.is_local:
            return False
        wanted = {self.manifest_name(rel) for rel in rels}
        known = {rel: text for rel, text in dict(self._known).items() if rel in wanted}
        if all(self._indexed.get(rel) == text for rel, text in known.items()):
            return False
        current = self._read_index(job_id)
        merged = {rel: text for rel, text in (current.manifests if current else {}).items() if rel in wanted}
        merged.update(known)
        try:
            self._write_atomic(self.path(index_rel(job_id)), encode_index(DoneIndex(job_id=job_id, manifests=merged)))
        except Exception as error:
            log.warning("store %s: cannot write the done index of %s: %s", self.url, job_id, describe(error))
            return False
        self._indexed = merged
        return True

    def forget(self, rel: str) -> None:
        """Drop `rel` from the snapshot: from now on its checks ask the store."""
        self._snapshot.pop(self.path(self.manifest_name(rel)), None)
        self._sizes.pop(self.path(rel), None)

    # -- writing ---------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Write and delete a probe file; StoreError naming the store when that fails. An object store found
        writable is not probed again by this process for WRITABLE_FOR_S (a warm worker renders many chunks
        into one store: two requests per chunk saved; a commit that fails later still says why)."""
        if not self.is_local and time.monotonic() - _writable.get(self.url, float("-inf")) < WRITABLE_FOR_S:
            return
        self._probe()
        if not self.is_local:
            _writable[self.url] = time.monotonic()

    def _probe(self) -> None:
        probe = f".helios-probe-{uuid.uuid4().hex}.tmp"  # ".tmp": never part of a composition digest
        try:
            with self.fs.open(self.path(probe), "wb") as handle:
                handle.write(b"ok")
            self.fs.rm(self.path(probe))
        except Exception as error:
            raise StoreError(f"store {self.url} is not writable: {describe(error)}", retryable=False) from None

    def commit(
        self,
        local_file: Path,
        rel: str,
        *,
        digest: str,
        job_id: str,
        frame_count: int,
        chunk_id: int | None = None,
        start_frame: int | None = None,
        dependencies: list[Dependency] | None = None,
        media_seen: int | None = None,
        media: list[MediaElement] | None = None,
        failed_loads: list[str] | None = None,
    ) -> DoneManifest:
        """Put `local_file` at `rel` atomically, then write its manifest; returns the manifest."""
        local_file = Path(local_file)
        if not local_file.is_file() or local_file.stat().st_size == 0:
            raise StoreError(f"cannot commit {rel}: {local_file} is missing or empty")
        manifest = DoneManifest(
            job_id=job_id,
            chunk_id=chunk_id,
            digest=digest,
            start_frame=start_frame,
            frame_count=frame_count,
            dependencies=dependencies or [],
            media_seen=media_seen,
            media=media,
            failed_loads=failed_loads or [],
            size=local_file.stat().st_size,
            sha256=sha256_file(local_file),
            created_at=datetime.now(UTC),
            producer=f"{socket.gethostname()}:{os.getpid()}",
        )
        final = self.path(rel)
        manifest_final = self.path(self.manifest_name(rel))
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        self.forget(rel)
        try:
            self._remove_quietly(manifest_final)
            if self.is_local:
                Path(tmp).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local_file, tmp)
                os.replace(tmp, final)
            elif is_s3(self.fs):  # a PUT is atomic (readers see no object, or the whole one): no temp key
                self.fs.put_file(str(local_file), final)
            else:
                self.fs.put_file(str(local_file), tmp)
                self.fs.mv(tmp, final)
            data = manifest_bytes(manifest)
            self._write_atomic(manifest_final, data)
            self._known[self.manifest_name(rel)] = data.decode()
        except StoreError:
            raise
        except Exception as error:
            self._remove_quietly(tmp)
            raise StoreError(f"store {self.url}: cannot commit {rel}: {describe(error)}") from None
        return manifest

    # -- hygiene ---------------------------------------------------------------------------------------
    def sweep_temporaries(
        self, rels: Iterable[str] | None = None, older_than_s: float = TEMPORARY_GRACE_S
    ) -> list[str]:
        """Remove what interrupted commits left (`<name>.tmp-<hex>`, write probes) once older than
        `older_than_s`, so a commit still in flight elsewhere keeps its upload. With `rels` (outputs of a
        job), only their own temporaries, by one listing of each of their folders; without, the whole store.
        Returns the removed paths, relative to the store."""
        self.refresh()
        root = self._real_root if self.is_local else self.root
        try:
            candidates = self._temporaries_of(rels) if rels is not None else self._all_temporaries()
        except FileNotFoundError:
            return []
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot list temporaries: {describe(error)}") from None
        now = datetime.now(UTC).timestamp()
        removed: list[str] = []
        for path, info in candidates:
            modified = _modified_at(info)
            if modified is not None and now - modified < older_than_s:
                continue
            self._remove_quietly(path)
            removed.append(posixpath.relpath(path, root) if root else path)
        return sorted(removed)

    def _all_temporaries(self) -> list[tuple[str, dict[str, Any]]]:
        found = self.fs.find(self.root, detail=True) if self.fs.exists(self.root) else {}
        return [(path, info) for path, info in found.items() if _is_temporary(path.rsplit("/", 1)[-1])]

    def _temporaries_of(self, rels: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        names_by_folder: dict[str, set[str]] = {}
        for rel in rels:
            folder, _, name = self.path(rel).rpartition("/")
            names_by_folder.setdefault(folder, set()).add(name)
        candidates = []
        for folder, names in names_by_folder.items():
            listing = self._listings.pop(folder, None)  # the run's snapshot listed it a moment ago
            if listing is None:
                if not self.fs.exists(folder):
                    continue
                listing = self.fs.ls(folder, detail=True)
            for info in listing:
                path = info["name"]
                name = path.rsplit("/", 1)[-1]
                owner = _TEMPORARY.sub("", name).removesuffix(MANIFEST_SUFFIX)
                if _TEMPORARY.search(name) and owner in names:
                    candidates.append((path, info))
        return candidates

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Put `data` at `rel`, atomically: readers see the old object, or none, or the whole new one."""
        try:
            self._write_atomic(self.path(rel), data)
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot write {rel}: {describe(error)}") from None

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        else:
            # An object-store PUT is atomic: readers see the old object, or none, or the whole new one.
            with self.fs.open(path, "wb") as handle:
                handle.write(data)

    def fetch(self, rel: str, local_path: Path) -> Path:
        """Copy `rel` to a local file (for a merge reading a remote store); returns the local path."""
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        source = self.local_path(rel)
        if source is not None:
            if source.resolve() != local_path.resolve():
                shutil.copyfile(source, local_path)
            return local_path
        try:
            fetch_file(self.fs, self.path(rel), local_path)
        except Exception as error:
            raise StoreError(f"store {self.url}: cannot fetch {rel}: {describe(error)}") from None
        return local_path

    def delete(self, rel: str) -> None:
        """Remove an output and its manifest (manifest first, so it is never done without its file)."""
        self.forget(rel)
        self._remove_quietly(self.path(self.manifest_name(rel)))
        self._remove_quietly(self.path(rel))

    def _remove_quietly(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except FileNotFoundError:
            pass
        except Exception as error:
            if self.fs.exists(path):
                raise StoreError(f"store {self.url}: cannot remove {path}: {describe(error)}") from None
