"""The stateless worker: load a job, render one chunk in a temp workspace, commit it to the artifact store.

`WorkerRuntime(workspace_dir).run(job_url, chunk_id, store)` is what the CLI (`helios worker run`), the
Lambda handler and the Cloud Run server all call. It never raises for a chunk's own failure: every problem
comes back as a :class:`WorkerResult` with one clear line in `stderr` and `retryable` saying whether trying
again can help (a network blip can; an invalid spec or an unknown chunk id cannot).

Where things resolve:

* the **store** is the one given; without one, a local job's store is its directory, an fsspec job's
  (`s3://bucket/jobs/intro.json`) is its URL's directory (`s3://bucket/jobs/`, mirroring the local layout);
  an http(s) job has no writable directory, so the store must be given.
* the **composition** (`config.input`): a URL is rendered from that URL; a relative path resolves against
  the job's location — a local folder, an http(s) base (rendered over http), or an fsspec folder that is
  downloaded into the workspace (job outputs and manifests skipped) and rendered locally.

A warm instance (Lambda, Cloud Run) runs many chunks of one job: it validates each distinct spec once, and
keeps downloaded compositions in `<workspace>/helios-composition-cache/<version>/` (immutable folders keyed
by the remote listing's names, sizes and ETags/mtimes), so unchanged assets are fetched once.

Idempotency under at-least-once invocation: a chunk whose output and matching done-manifest are already in
the store is reported `skipped` without rendering; two workers committing the same chunk at once leave one
valid chunk (the store's commit order plus deterministic encoding).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from helios_kit.backends.base import WorkerResult
from helios_kit.errors import HeliosError, LoaderError, RenderError, SpecError, StoreError, describe
from helios_kit.loaders import LoaderOptions, read_source, scheme_of
from helios_kit.spec import MANIFEST_SUFFIX, JobSpec, chunk_digest, composition_digest, job_outputs, loads
from helios_kit.store import download

log = logging.getLogger("helios.worker")

#: `render(config, *, input_location, start_frame, frame_count, output_path, progress, cancel, quiet)`.
RenderFn = Callable[..., Any]

_SPEC_CACHE_SIZE = 8
#: Under the workspace: downloaded compositions, one immutable folder per remote version.
COMPOSITION_CACHE_DIR = "helios-composition-cache"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130

#: `module:function` of another render function (a test double, a custom renderer) for workers started
#: out of process (Lambda, Cloud Run, `helios worker`); unset means the real renderer.
RENDER_ENV_VAR = "HELIOS_WORKER_RENDER"


def _default_render(config: Any, **kwargs: Any) -> Any:
    reference = os.environ.get(RENDER_ENV_VAR)
    if reference:
        from helios_kit.plugins import resolve_reference

        return resolve_reference(reference)(config, **kwargs)
    from helios_kit.render.session import render_range

    return render_range(config, **kwargs)


def _is_http(url: str) -> bool:
    return scheme_of(url) in ("http", "https")


def _is_local(url: str) -> bool:
    return scheme_of(url) == "file"


def _url_dir(url: str) -> str:
    """`s3://bucket/jobs/intro.json` → `s3://bucket/jobs`."""
    return url.rsplit("/", 1)[0] if "/" in url.split("://", 1)[1] else url


def default_store_url(job_url: str) -> str:
    """The store a worker uses when none is given; StoreError for an http(s) job (no writable folder)."""
    if _is_local(job_url):
        return str(Path(job_url.removeprefix("file://")).resolve().parent)
    if _is_http(job_url):
        raise StoreError(f'job {job_url} is served over http(s): give the artifact store (--store / "store")')
    return _url_dir(job_url) + "/"


@dataclass(frozen=True)
class ResolvedComposition:
    """Where the renderer opens the composition, and the content digest the chunk digests use."""

    input_location: str
    content_digest: str
    job_dir: Path | None = None


def resolve_composition(
    spec: JobSpec,
    job_url: str,
    workspace: Path,
    storage_options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> ResolvedComposition:
    """Find the composition of `spec` loaded from `job_url`; fsspec compositions are downloaded to `workspace`
    (or, with `cache_dir`, into an immutable per-version folder there, reused while the remote files are
    unchanged: a warm instance does not download the same assets for every chunk).

    Clients checking the store (the executor) should use this too, so their digests match the workers'.
    """
    input_ref = spec.config.input
    if scheme_of(input_ref) != "file" and "://" in input_ref:
        if _is_http(input_ref):
            return ResolvedComposition(input_ref, composition_digest(input_ref))
        return _download_composition(
            spec,
            _url_dir(input_ref),
            posixpath.basename(input_ref),
            workspace,
            storage_options,
            outputs_base=None,
            cache_dir=cache_dir,
        )
    if _is_local(job_url):
        job_dir = Path(job_url.removeprefix("file://")).resolve().parent
        path = Path(input_ref) if Path(input_ref).is_absolute() else job_dir / input_ref
        digest = composition_digest(input_ref, job_dir, exclude=_outputs_to_exclude(spec))
        return ResolvedComposition(str(path), digest, job_dir)
    if Path(input_ref).is_absolute():
        raise SpecError(f"config.input: absolute path {input_ref!r} cannot be resolved for a remote job {job_url}")
    base = _url_dir(job_url) + "/"
    if _is_http(job_url):
        url = urljoin(base, input_ref)
        return ResolvedComposition(url, composition_digest(url))
    return _download_composition(
        spec,
        _url_dir(job_url),
        input_ref,
        workspace,
        storage_options,
        outputs_base=_url_dir(job_url),
        cache_dir=cache_dir,
    )


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
    import fsspec

    try:
        fs, base_path = fsspec.core.url_to_fs(base_url, **(storage_options or {}))
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
        version = _listing_version(base_url, base_path, listing) if cache_dir is not None else None
        if version is not None and cache_dir is not None:
            local_job = cache_dir / version
            if not local_job.is_dir():
                staging = cache_dir / f".{version}.{uuid.uuid4().hex}.tmp"
                _fetch_all(fs, base_path, listing, staging)
                try:
                    staging.rename(local_job)  # immutable once in place; a concurrent twin may have won
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)
                _prune_cache(cache_dir, keep=local_job)
            else:
                os.utime(local_job)
        else:
            local_job = workspace / "job"
            _fetch_all(fs, base_path, listing, local_job)
    except HeliosError:
        raise
    except Exception as error:
        raise LoaderError(
            f"cannot download composition {base_url}/{input_rel}: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from None
    digest = composition_digest(input_rel, local_job, exclude=_outputs_to_exclude(spec))
    return ResolvedComposition(str(local_job / input_rel), digest, local_job)


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
        download(fs, remote, target)
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


def _outputs_to_exclude(spec: JobSpec) -> tuple[str, ...]:
    """`job_outputs(spec)` without paths inside an excluded folder: the same files are hashed (an excluded
    folder is never walked), but a 200-chunk job checks a handful of paths per file instead of hundreds."""
    outputs = sorted(job_outputs(spec))
    kept: list[str] = []
    for path in outputs:
        if not any(path.startswith(folder + "/") for folder in kept):
            kept.append(path)
    return tuple(kept)


def _skipped(rel: str, outputs: set[str]) -> bool:
    if rel.endswith(MANIFEST_SUFFIX) or ".tmp-" in rel or "/.helios-probe-" in f"/{rel}":
        return True
    return any(rel == out or rel.startswith(out.rstrip("/") + "/") for out in outputs)


class WorkerRuntime:
    """Runs chunks statelessly: everything comes from the job URL, everything goes to the store."""

    def __init__(
        self,
        workspace_dir: str | Path | None = None,
        render: RenderFn | None = None,
        *,
        loader_options: LoaderOptions | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.workspace_dir = Path(workspace_dir) if workspace_dir is not None else Path(tempfile.gettempdir())
        self.render = render or _default_render
        self.loader_options = loader_options or LoaderOptions()
        self.storage_options = storage_options or {}
        self._specs: dict[str, JobSpec] = {}
        self._lock = threading.Lock()

    def _load_spec(self, job_url: str) -> JobSpec:
        """Fetch the spec every time (it may change), but validate each distinct content only once: a warm
        Lambda or Cloud Run instance runs many chunks of the same job."""
        data = read_source(job_url, self.loader_options)  # deadline and size cap; LoaderError says if retryable
        key = hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest() + "|" + job_url
        with self._lock:
            spec = self._specs.get(key)
        if spec is None:
            spec = loads(data, source=job_url)
            with self._lock:
                self._specs[key] = spec
                while len(self._specs) > _SPEC_CACHE_SIZE:
                    self._specs.pop(next(iter(self._specs)))
        return spec

    def run(
        self,
        job_url: str,
        chunk_id: int,
        store: str | None = None,
        force: bool = False,
        *,
        cancel: threading.Event | None = None,
    ) -> WorkerResult:
        """Render chunk `chunk_id` of the job at `job_url` into `store`; never raises for the chunk's failure."""
        started = time.monotonic()

        def result(exit_code: int, *, retryable: bool = True, stderr: str = "", **fields: Any) -> WorkerResult:
            if stderr:
                log.info("chunk %s of %s: %s", chunk_id, job_url, stderr)
            return WorkerResult(
                chunk_id=chunk_id,
                exit_code=exit_code,
                stderr=stderr,
                retryable=retryable,
                duration_ms=(time.monotonic() - started) * 1000,
                **fields,
            )

        try:
            self.workspace_dir.mkdir(parents=True, exist_ok=True)
            workspace = Path(tempfile.mkdtemp(prefix=f"helios-chunk-{chunk_id}-", dir=self.workspace_dir))
        except OSError as error:
            return result(EXIT_FAILED, stderr=f"workspace {self.workspace_dir} is not usable: {error}")
        try:
            return self._run(job_url, chunk_id, store, force, cancel, workspace, result)
        except SpecError as error:
            return result(EXIT_USAGE, retryable=False, stderr=str(error))
        except LoaderError as error:
            exit_code = EXIT_FAILED if error.retryable else EXIT_USAGE
            return result(exit_code, retryable=error.retryable, stderr=str(error))
        except RenderError as error:
            return result(EXIT_FAILED, retryable=error.retryable, stderr=f"render failed: {error}")
        except StoreError as error:
            return result(EXIT_FAILED, retryable=error.retryable, stderr=str(error))
        except HeliosError as error:
            return result(error.exit_code, retryable=False, stderr=str(error))
        except Exception as error:  # a worker reports, it never crashes its host (Lambda, Cloud Run)
            log.exception("chunk %s of %s crashed", chunk_id, job_url)
            return result(EXIT_FAILED, stderr=f"worker error: {describe(error)}")
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    def _run(
        self,
        job_url: str,
        chunk_id: int,
        store_url: str | None,
        force: bool,
        cancel: threading.Event | None,
        workspace: Path,
        result: Callable[..., WorkerResult],
    ) -> WorkerResult:
        from helios_kit.store import ArtifactStore

        spec = self._load_spec(job_url)
        chunk = spec.chunk(chunk_id)
        try:
            store = ArtifactStore(store_url or default_store_url(job_url), **self.storage_options)
        except StoreError as error:  # no store for an http job, an unknown scheme: a retry cannot help
            return result(EXIT_USAGE, retryable=False, stderr=str(error))
        composition = resolve_composition(
            spec, job_url, workspace, self.storage_options, cache_dir=self.workspace_dir / COMPOSITION_CACHE_DIR
        )
        digest = chunk_digest(spec, chunk, content_digest=composition.content_digest)
        rel = chunk.output_file
        if not force and store.is_complete(rel, digest):
            return result(
                EXIT_OK,
                skipped=True,
                output_file=store.uri(rel),
                frames=chunk.frame_count,
                stdout=f"chunk {chunk.id}: already complete in {store.url}, skipped",
            )
        try:
            store.check_writable()
        except StoreError as error:
            return result(EXIT_FAILED, retryable=False, stderr=str(error))
        if cancel is not None and cancel.is_set():
            return result(EXIT_CANCELLED, retryable=False, stderr=f"chunk {chunk.id}: cancelled")
        output = workspace / "out" / posixpath.basename(rel)
        output.parent.mkdir(parents=True, exist_ok=True)
        stats = self.render(
            spec.config,
            input_location=composition.input_location,
            start_frame=chunk.start_frame,
            frame_count=chunk.frame_count,
            output_path=output,
            progress=None,
            cancel=cancel,
            quiet=True,
        )
        if cancel is not None and cancel.is_set():
            return result(EXIT_CANCELLED, retryable=False, stderr=f"chunk {chunk.id}: cancelled")
        frames = int(getattr(stats, "frames", 0) or getattr(stats, "frame_count", 0) or chunk.frame_count)
        manifest = store.commit(
            output, rel, digest=digest, job_id=spec.job_id, frame_count=chunk.frame_count, chunk_id=chunk.id
        )
        return result(
            EXIT_OK,
            output_file=store.uri(rel),
            frames=frames,
            stdout=f"chunk {chunk.id}: frames [{chunk.start_frame}, {chunk.end_frame}) → "
            f"{store.uri(rel)} ({manifest.size} bytes)",
        )
