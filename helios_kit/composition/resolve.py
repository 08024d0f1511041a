"""Where a job's composition is rendered from: a local folder, an http(s) URL, or an fsspec folder that is
downloaded (and cached for warm workers). Client and workers resolve through :func:`resolve_composition`,
so both see the same composition and check the same dependencies.

The rule for `config.input` (docs/ARCHITECTURE.md, "Where paths resolve"):

* a URL is rendered from that URL (http(s) directly; s3://, gs://, memory:// ... downloaded);
* a relative path resolves in the job dir: a local job file's folder, or, for a job loaded from a URL, the
  current directory when the composition is found there;
* otherwise (a stateless worker with nothing local) it resolves relative to the job's URL: over http for an
  http(s) job, downloaded for an fsspec job.

A warm instance (Lambda, Cloud Run) keeps downloaded compositions in `<cache_dir>/<version>/` (immutable
folders keyed by the remote listing's names, sizes and ETags/mtimes), so unchanged assets are fetched once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict

from helios_kit.composition.deps import DependencyChecker
from helios_kit.composition.identity import job_outputs
from helios_kit.composition.locations import is_http, is_local, job_dir_for, local_path, parent_url, url_to_fs
from helios_kit.errors import HeliosError, LoaderError, SpecError
from helios_kit.spec import MANIFEST_SUFFIX, JobSpec

log = logging.getLogger("helios.composition")

#: Listing fields that change when an object's content does (S3, GCS, Azure, local/memory filesystems).
_CHANGE_MARKERS = (
    "ETag",
    "etag",
    "md5Hash",
    "crc32c",
    "generation",
    "LastModified",
    "last_modified",
    "mtime",
    "updated",
    "created",
)
_CACHE_VERSIONS_KEPT = 4


class ResolvedComposition(BaseModel):
    """A composition ready to render: where the renderer opens it and which folder its files live in."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: What the renderer opens: a local HTML file or folder, or an http(s) URL.
    input_location: str
    #: The local folder whose files are the composition's (None for an http(s) composition).
    root: Path | None = None
    #: Which location was used, for people: "examples/titles/index.html (job dir)", a URL, ...
    source: str = ""
    #: True when the files were downloaded from an fsspec URL into a workspace or cache.
    downloaded: bool = False

    def checker(self) -> DependencyChecker:
        """A checker of recorded dependencies against this composition's current files and URLs."""
        return DependencyChecker(self.root)


def fetch_file(fs: Any, remote: str, local: str | os.PathLike[str]) -> None:
    """Copy one remote file to a local path, safely from several threads at once.

    fsspec's in-memory filesystem hands every reader the same BytesIO (one shared position), so concurrent
    `get_file`/`open` calls there can read each other's leftovers; its `cat_file` copies the buffer instead.
    """
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "memory" in protocols:
        Path(local).write_bytes(fs.cat_file(remote))
    else:
        fs.get_file(remote, os.fspath(local))


def _local_root(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _local(path: Path, source: str) -> ResolvedComposition:
    return ResolvedComposition(input_location=str(path), root=_local_root(path).resolve(), source=source)


def resolve_composition(
    spec: JobSpec,
    job_url: str,
    workspace: Path,
    storage_options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    job_dir: Path | None = None,
) -> ResolvedComposition:
    """Find the composition of `spec` loaded from `job_url` (see the module's rule). fsspec compositions are
    downloaded to `workspace`, or with `cache_dir` into an immutable per-version folder there."""
    input_ref = spec.config.input
    if is_http(input_ref):
        return ResolvedComposition(input_location=input_ref, source=input_ref)
    if not is_local(input_ref):
        return _download_composition(
            spec, parent_url(input_ref), posixpath.basename(input_ref), workspace, storage_options, None, cache_dir
        )
    path = local_path(input_ref)
    base = job_dir if job_dir is not None else job_dir_for(job_url)
    if is_local(job_url):
        return _local(path if path.is_absolute() else base / path, f"{input_ref} (job dir {base})")
    if path.is_absolute():
        if path.exists():
            return _local(path, str(path))
        raise SpecError(f"config.input: absolute path {input_ref!r} cannot be resolved for a remote job {job_url}")
    if (base / path).exists():
        return _local(base / path, f"{input_ref} (current directory {base})")
    if is_http(job_url):
        url = urljoin(parent_url(job_url) + "/", input_ref)
        return ResolvedComposition(input_location=url, source=f"{url} (relative to the job URL)")
    return _download_composition(
        spec, parent_url(job_url), input_ref, workspace, storage_options, parent_url(job_url), cache_dir
    )


def _download_composition(
    spec: JobSpec,
    base_url: str,
    input_rel: str,
    workspace: Path,
    storage_options: dict[str, Any] | None,
    outputs_base: str | None,
    cache_dir: Path | None = None,
) -> ResolvedComposition:
    """Copy the composition's folder from an fsspec URL, skipping job outputs, manifests and temp keys."""
    try:
        fs, base_path = url_to_fs(base_url, **(storage_options or {}))
        fs.invalidate_cache()  # a warm instance must see files changed since its last chunk
        base_path = base_path.rstrip("/")
        entry = f"{base_path}/{input_rel}"
        if not fs.exists(entry):
            raise LoaderError(f"composition not found: {base_url}/{input_rel}", retryable=False)
        root = entry if fs.isdir(entry) else posixpath.dirname(entry)
        skip = set(job_outputs(spec)) if outputs_base is not None else set()
        listing = {
            path: info
            for path, info in fs.find(root, detail=True).items()
            if not _skipped(posixpath.relpath(path, base_path), skip)
        }
        local_job = _fetch_listing(fs, base_url, base_path, listing, workspace, cache_dir)
    except HeliosError:
        raise
    except Exception as error:
        text = str(error).strip()
        raise LoaderError(
            f"cannot download composition {base_url}/{input_rel}: {type(error).__name__}: "
            f"{text.splitlines()[0] if text else ''}"
        ) from None
    entry_path = local_job / input_rel
    return ResolvedComposition(
        input_location=str(entry_path),
        root=_local_root(entry_path).resolve(),
        source=f"{base_url}/{input_rel} (downloaded)",
        downloaded=True,
    )


def _fetch_listing(
    fs: Any, base_url: str, base_path: str, listing: dict[str, dict[str, Any]], workspace: Path, cache_dir: Path | None
) -> Path:
    """The local copy of `listing`: a cached immutable version folder when the listing has change markers."""
    version = _listing_version(base_url, base_path, listing) if cache_dir is not None else None
    if version is None or cache_dir is None:
        local_job = workspace / "job"
        _fetch_all(fs, base_path, listing, local_job)
        return local_job
    local_job = cache_dir / version
    if local_job.is_dir():
        os.utime(local_job)
        return local_job
    staging = cache_dir / f".{version}.{uuid.uuid4().hex}.tmp"
    _fetch_all(fs, base_path, listing, staging)
    try:
        staging.rename(local_job)  # immutable once in place; a concurrent twin may have won
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    _prune_cache(cache_dir, keep=local_job)
    return local_job


def _listing_version(base_url: str, base_path: str, listing: dict[str, dict[str, Any]]) -> str | None:
    """A hash of the remote files' names, sizes and change markers; None when a file has no marker."""
    digest = hashlib.sha256(f"{base_url}\n".encode())
    for path in sorted(listing):
        info = listing[path]
        markers = {key: str(info[key]) for key in _CHANGE_MARKERS if info.get(key) is not None}
        if not markers:
            return None
        digest.update(f"{posixpath.relpath(path, base_path)}|{info.get('size')}|{sorted(markers.items())}\n".encode())
    return digest.hexdigest()[:32]


def _fetch_all(fs: Any, base_path: str, listing: dict[str, dict[str, Any]], target_dir: Path) -> None:
    for remote in sorted(listing):
        if listing[remote].get("type") == "directory":
            continue
        target = target_dir / posixpath.relpath(remote, base_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fetch_file(fs, remote, target)
    target_dir.mkdir(parents=True, exist_ok=True)
    log.debug("downloaded %d composition files into %s", len(listing), target_dir)


def _prune_cache(cache_dir: Path, keep: Path) -> None:
    versions = sorted(
        (p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in versions[_CACHE_VERSIONS_KEPT:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _skipped(rel: str, outputs: set[str]) -> bool:
    if rel.endswith(MANIFEST_SUFFIX) or ".tmp-" in rel or "/.helios-probe-" in f"/{rel}":
        return True
    return any(rel == out or rel.startswith(out.rstrip("/") + "/") for out in outputs)
