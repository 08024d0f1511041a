"""The stateless worker: load a job, render one chunk in a temp workspace, commit it to the artifact store.

`WorkerRuntime(workspace_dir).run(job_url, chunk_id, store)` is what the CLI (`helios worker run`), the
Lambda handler and the Cloud Run server all call. It never raises for a chunk's own failure: every problem
comes back as a :class:`WorkerResult` with one clear line in `stderr` and `retryable` saying whether trying
again can help (a network blip can; an invalid spec or an unknown chunk id cannot).

Where things resolve:

* the **store** is the one given; without one, a local job's store is its directory, an fsspec job's
  (`s3://bucket/jobs/intro.json`) is its URL's directory (`s3://bucket/jobs/`, mirroring the local layout);
  an http(s) job has no writable directory, so the store must be given.
* the **composition** (`config.input`) resolves through :func:`helios_kit.composition.resolve_composition`,
  the same rule the client uses: a local job's folder; for a URL job the current directory when the
  composition is there, else relative to the job's URL (over http, or downloaded from fsspec).

`HELIOS_WORKER_LANES=N` renders each chunk in N browsers at once (lanes capturing interleaved frames into one
encoder), for a worker with the cores for them.

`WorkerRuntime(..., warm=WarmBrowser())` renders every chunk in one kept browser, reset between chunks
(:mod:`helios_kit.render.warm`): the local backend's long-lived workers (:mod:`helios_kit.worker.lines`) and
in-process callers that run many chunks or videos.

A warm instance (Lambda, Cloud Run) runs many chunks of one job: it validates each distinct spec once, and
keeps downloaded compositions in `<workspace>/helios-composition-cache/<version>/` (immutable folders keyed
by the remote listing's names, sizes and ETags/mtimes), so unchanged assets are fetched once.

The committed done-manifest records the chunk's dependencies (what its render loaded). Idempotency under
at-least-once invocation: a chunk whose output and matching done-manifest (dependencies unchanged) are
already in the store is reported `skipped` without rendering; two workers committing the same chunk at once leave one
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helios_kit.cancel_marker import CancelWatch
from helios_kit.composition import chunk_digest, default_store_url, resolve_composition
from helios_kit.composition.media import MediaElement
from helios_kit.errors import HeliosError, RenderError, describe
from helios_kit.loaders import LoaderOptions
from helios_kit.protocol import WorkerRequest, WorkerResult, WorkerStatus
from helios_kit.spec import JobSpec, loads
from helios_kit.worker.fetch import FetchCancelled, fetch_spec

if TYPE_CHECKING:
    from helios_kit.render.warm import WarmBrowser

log = logging.getLogger("helios.worker")

#: `render(config, *, input_location, start_frame, frame_count, output_path, progress, cancel, quiet)`.
RenderFn = Callable[..., Any]

_SPEC_CACHE_SIZE = 8
#: Under the workspace: downloaded compositions, one immutable folder per remote version.
COMPOSITION_CACHE_DIR = "helios-composition-cache"


#: `module:function` of another render function (a test double, a custom renderer) for workers started
#: out of process (Lambda, Cloud Run, `helios worker`); unset means the real renderer.
RENDER_ENV_VAR = "HELIOS_WORKER_RENDER"


#: Browsers a worker renders each chunk in at once (lanes, `render/parallel.py`), for a worker with cores to
#: spare (a Cloud Run service or Lambda function of 2+ vCPUs): titles ran 1.3x faster in 2 lanes on 2 cores.
#: Unset or 1: one browser. A chunk with seam checks, or rendered in a kept browser, uses one.
LANES_ENV_VAR = "HELIOS_WORKER_LANES"


def worker_lanes() -> int:
    """The lanes `HELIOS_WORKER_LANES` asks for (1 when unset; HeliosError naming a value that is not a count)."""
    raw = os.environ.get(LANES_ENV_VAR, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise HeliosError(f"{LANES_ENV_VAR} must be a whole number of browsers, 1 or more, got {raw!r}")
    return int(raw)


def _default_render(config: Any, **kwargs: Any) -> Any:
    reference = os.environ.get(RENDER_ENV_VAR)
    if reference:
        from helios_kit.plugins import resolve_reference

        kwargs.pop("warm", None)  # a stand-in renderer has no browser to keep
        return resolve_reference(reference)(config, **kwargs)
    lanes = worker_lanes()
    if lanes > 1 and kwargs.get("warm") is None and kwargs.get("seam") is None:
        from helios_kit.render.parallel import render_parallel

        kwargs.pop("warm", None)
        kwargs.pop("seam", None)
        return render_parallel(config, parts=lanes, **kwargs)
    from helios_kit.render.session import render_range

    return render_range(config, **kwargs)


class WorkerRuntime:
    """Runs chunks statelessly: everything comes from the job URL, everything goes to the store."""

    def __init__(
        self,
        workspace_dir: str | Path | None = None,
        render: RenderFn | None = None,
        *,
        loader_options: LoaderOptions | None = None,
        storage_options: dict[str, Any] | None = None,
        warm: WarmBrowser | None = None,
    ) -> None:
        self.workspace_dir = Path(workspace_dir) if workspace_dir is not None else Path(tempfile.gettempdir())
        self.render = render or _default_render
        self.loader_options = loader_options or LoaderOptions()
        self.storage_options = storage_options or {}
        #: A kept browser every render of this runtime uses (None: each render starts its own).
        self.warm = warm
        self._specs: dict[str, JobSpec] = {}
        self._lock = threading.Lock()
        #: `(what, url)` → raises a HeliosError when the worker may not use `url` (the HTTP worker's allowlist
        #: for a composition named by absolute URL); None allows every location.
        self.location_check: Callable[[str, str], None] | None = None

    def _load_spec(self, job_url: str, cancel: threading.Event | None = None) -> JobSpec:
        """Fetch the spec every time (it may change), but validate each distinct content only once: a warm
        Lambda or Cloud Run instance runs many chunks of the same job. A set `cancel` stops the fetch."""
        data = fetch_spec(job_url, self.loader_options, cancel)  # deadline, size cap; LoaderError: retryable?
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
        progress: Callable[[int, int], None] | None = None,
        verify_seams: bool = False,
    ) -> WorkerResult:
        """Render chunk `chunk_id` of the job at `job_url` into `store`; never raises for the chunk's failure.

        `progress(done, total)` is called as frames are captured; without one, the frames go to a heartbeat
        object beside the output in the store (helios_kit.heartbeat), for a client with no pipe to us.
        `verify_seams` (or `verify.seams` in the spec) keeps the chunk's seam images (see seams.py)."""
        started = time.monotonic()
        cancel = cancel if cancel is not None else threading.Event()  # also set by the job's cancel marker

        def result(status: WorkerStatus, *, retryable: bool = True, stderr: str = "", **fields: Any) -> WorkerResult:
            if stderr:
                log.info("chunk %s of %s: %s", chunk_id, job_url, stderr)
            return WorkerResult(
                chunk_id=chunk_id,
                status=status,
                stderr=stderr,
                retryable=retryable,
                duration_ms=(time.monotonic() - started) * 1000,
                **fields,
            )

        try:
            self.workspace_dir.mkdir(parents=True, exist_ok=True)
            workspace = Path(tempfile.mkdtemp(prefix=f"helios-chunk-{chunk_id}-", dir=self.workspace_dir))
        except OSError as error:
            return result(WorkerStatus.FAILED, stderr=f"workspace {self.workspace_dir} is not usable: {error}")
        try:
            return self._run(job_url, chunk_id, store, force, cancel, workspace, result, progress, verify_seams)
        except FetchCancelled:
            return result(WorkerStatus.CANCELLED, retryable=False, stderr=f"chunk {chunk_id}: cancelled (spec fetch)")
        except RenderError as error:
            if cancel.is_set():
                return result(WorkerStatus.CANCELLED, retryable=False, stderr=f"chunk {chunk_id}: cancelled")
            return result(WorkerStatus.FAILED, retryable=error.retryable, stderr=f"render failed: {error}")
        except HeliosError as error:  # SpecError, LoaderError, StoreError: each says whether a retry may help
            return result(WorkerStatus.FAILED, retryable=error.retryable, stderr=str(error))
        except Exception as error:  # a worker reports, it never crashes its host (Lambda, Cloud Run)
            log.exception("chunk %s of %s crashed", chunk_id, job_url)
            return result(WorkerStatus.FAILED, stderr=f"worker error: {describe(error)}")
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
        progress: Callable[[int, int], None] | None = None,
        verify_seams: bool = False,
    ) -> WorkerResult:
        from helios_kit import seams
        from helios_kit.heartbeat import StoreHeartbeat
        from helios_kit.store import ArtifactStore, manifest_bytes

        spec = self._load_spec(job_url, cancel)
        chunk = spec.chunk(chunk_id)
        if self.location_check is not None and "://" in spec.config.input:
            self.location_check("composition", spec.config.input)
        store = ArtifactStore(store_url or default_store_url(job_url), **self.storage_options)
        composition = resolve_composition(
            spec, job_url, workspace, self.storage_options, cache_dir=self.workspace_dir / COMPOSITION_CACHE_DIR
        )
        digest = chunk_digest(spec, chunk)
        rel = chunk.output_file
        verify_seams = verify_seams or spec.verify.seams
        if (
            not force
            and store.is_complete(rel, digest, composition.checker())
            and (not verify_seams or seams.has_images(store, spec, chunk))
        ):
            # with the manifest that vouched for it: a retry or backup that finds the chunk committed by an
            # attempt whose answer was lost (or that lost the race) still tells the client's done index
            return result(
                WorkerStatus.SKIPPED,
                output_file=store.uri(rel),
                frames=chunk.frame_count,
                manifest=store.known_manifest(rel),
                stdout=f"chunk {chunk.id}: already complete in {store.url}, skipped",
            )
        store.check_writable()
        if cancel is not None and cancel.is_set():
            return result(WorkerStatus.CANCELLED, retryable=False, stderr=f"chunk {chunk.id}: cancelled")
        output = workspace / "out" / posixpath.basename(rel)
        output.parent.mkdir(parents=True, exist_ok=True)
        heartbeat = StoreHeartbeat(store, rel, chunk.id) if progress is None else None
        extra: dict[str, Any] = {"seam": _seam_images(spec, chunk, output)} if verify_seams else {}
        with CancelWatch(store, spec.job_id, cancel):  # the job's cancel marker stops the render between frames
            stats = self.render(
                spec.config,
                input_location=composition.input_location,
                start_frame=chunk.start_frame,
                frame_count=chunk.frame_count,
                output_path=output,
                progress=progress or heartbeat,
                cancel=cancel,
                quiet=True,
                **({"warm": self.warm} if self.warm is not None else {}),
                **extra,
            )
        if heartbeat is not None:
            heartbeat.clear()
        if cancel is not None and cancel.is_set():
            return result(WorkerStatus.CANCELLED, retryable=False, stderr=f"chunk {chunk.id}: cancelled")
        frames = int(getattr(stats, "frames", 0) or getattr(stats, "frame_count", 0) or chunk.frame_count)
        if verify_seams:  # before the chunk's manifest: a done chunk has its seam images
            seams.commit_images(store, rel, dict(getattr(stats, "seam_files", None) or {}))
        manifest = store.commit(
            output,
            rel,
            digest=digest,
            job_id=spec.job_id,
            frame_count=chunk.frame_count,
            chunk_id=chunk.id,
            start_frame=chunk.start_frame,
            dependencies=list(getattr(stats, "dependencies", None) or []),
            media_seen=getattr(stats, "media_seen", None),
            media=_media_of(stats) if chunk.end_frame >= spec.config.start_frame + spec.config.frame_count else None,
            failed_loads=list(getattr(stats, "failed_loads", None) or []),
        )
        return result(
            WorkerStatus.OK,
            output_file=store.uri(rel),
            frames=frames,
            manifest=manifest_bytes(manifest).decode(),
            stdout=f"chunk {chunk.id}: frames [{chunk.start_frame}, {chunk.end_frame}) → "
            f"{store.uri(rel)} ({manifest.size} bytes)",
        )


def _media_of(stats: Any) -> list[MediaElement] | None:
    """The media elements the chunk's page showed (None when its render did not say). Only the chunk that
    reaches the job's end records them: the merge reads no other, and a page with many media elements would
    otherwise grow every manifest (and the done index that holds them all)."""
    scan = getattr(stats, "media", None)
    return list(scan.elements) if scan is not None else None


def _seam_images(spec: JobSpec, chunk: Any, output: Path) -> Any:
    """The seam images a render of `chunk` keeps beside `output` (see helios_kit.seams)."""
    from helios_kit import seams
    from helios_kit.render.session import SeamImages

    head, tail = seams.wanted(spec, chunk)
    return SeamImages(
        head=output.with_name(f"{output.name}.{seams.HEAD}") if head else None,
        tail=output.with_name(f"{output.name}.{seams.TAIL}") if tail else None,
    )


# ---------------------------------------------------------------------------------------------------
# The merge next to the store (`WorkerRequest.merge`): Lambda, Cloud Run and Dask workers


def handle_request(
    runtime: WorkerRuntime, request: WorkerRequest, *, cancel: threading.Event | None = None
) -> WorkerResult:
    """What a worker does with a request: render its chunk, or (``merge``) merge the job next to the store."""
    if request.merge:
        return run_merge(runtime, request.job_url, request.store, cancel=cancel)
    return runtime.run(
        request.job_url, request.chunk_id, request.store, request.force, cancel=cancel, **request.run_flags()
    )


def run_merge(
    runtime: WorkerRuntime, job_url: str, store_url: str | None, *, cancel: threading.Event | None = None
) -> WorkerResult:
    """Fetch the complete chunks from the store, stitch them, mix the audio and commit the output with its
    manifest (:func:`helios_kit.merging.merge_into_store`, the client's own merge); never raises."""
    from helios_kit.context import JobContext
    from helios_kit.merging import merge_into_store

    started = time.monotonic()

    def failed(message: str, retryable: bool) -> WorkerResult:
        log.info("merge of %s: %s", job_url, message)
        return WorkerResult.failed(None, message, retryable=retryable, duration_ms=(time.monotonic() - started) * 1000)

    try:
        runtime.workspace_dir.mkdir(parents=True, exist_ok=True)
        workspace = Path(tempfile.mkdtemp(prefix="helios-merge-", dir=runtime.workspace_dir))
    except OSError as error:
        return failed(f"workspace {runtime.workspace_dir} is not usable: {error}", True)
    ctx = None
    try:
        spec = runtime._load_spec(job_url, cancel)
        ctx = JobContext.prepare(spec, job_url, workspace, store_url=store_url or default_store_url(job_url))
        merged = merge_into_store(ctx, cancel=cancel)
    except FetchCancelled:
        return failed("merge cancelled (spec fetch)", False)
    except HeliosError as error:
        return failed(f"merge failed: {error}", error.retryable)
    except Exception as error:  # a worker reports, it never crashes its host
        log.exception("merge of %s crashed", job_url)
        return failed(f"merge failed: worker error: {describe(error)}", True)
    finally:
        if ctx is not None:
            ctx.close()
        shutil.rmtree(workspace, ignore_errors=True)
    return WorkerResult(
        status=WorkerStatus.OK,
        output_file=merged.output,
        frames=merged.frames,
        stdout=f"merged → {merged.output} ({merged.frames} frames)",
        duration_ms=(time.monotonic() - started) * 1000,
    )
