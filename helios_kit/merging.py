"""The merge of a job's chunks, wherever it runs: on the client, or next to the store on a worker.

:func:`merge_into_store` joins the complete chunks by stream copy (:mod:`helios_kit.stitch`), mixes the
composition's audio once, and commits the output with its manifest; the run module's ``merge_job`` (the
client) and the worker runtime's ``run_merge`` (Lambda, Cloud Run, Dask) both call it, so a remote merge is
the same merge. :func:`choose_merge` decides where (``--merge auto|local|remote``; auto is remote when the
store is remote and the backend can merge), and :func:`merge_remotely` asks the backend and then checks the
store: the store, not the worker's answer, says whether the output is complete. A remote merge downloads
nothing to the client.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential, wait_random

from helios_kit.backends.base import Backend
from helios_kit.context import JobContext
from helios_kit.errors import HeliosError, RenderError
from helios_kit.protocol import WorkerResult
from helios_kit.spec import id_ranges

if TYPE_CHECKING:
    from helios_kit.composition.media import MediaScan
    from helios_kit.render.audio import AudioPlan
    from helios_kit.store import DoneManifest

log = logging.getLogger("helios.merge")


class MergeWhere(StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    REMOTE = "remote"


class Merged(BaseModel):
    """What a merge committed."""

    output: str
    frames: int
    duration_s: float


def merge_into_store(ctx: JobContext, *, cancel: threading.Event | None = None) -> Merged:
    """Join the complete chunks into the job's output (fetching them first from a remote store), mix the
    composition's audio once, and commit the output with its own manifest. Raises HeliosError on failure."""
    from helios_kit.stitch import stitch

    spec = ctx.spec
    manifests = ctx.input_manifests()
    digest = ctx.merge_digest(manifests)
    if digest is None:
        raise RenderError(f"merge: chunks {id_ranges(ctx.missing_chunks(manifests))} are not complete")
    output_rel = spec.merge.output_file
    work = Path(tempfile.mkdtemp(prefix="helios-merge-"))
    try:
        inputs = _local_chunk_files(ctx, work, cancel)
        merged = work / ("merged" + (Path(output_rel).suffix or ".mp4"))
        _warn_missing_files(manifests)
        last = manifests[-1]  # the chunk that reached the job's end
        audio = None if last is not None and last.media_seen == 0 else _audio_plan(ctx, last)
        result = stitch(inputs, merged, audio=audio, expected_frames=spec.config.frame_count)
        ctx.store.commit(merged, output_rel, digest=digest, job_id=spec.job_id, frame_count=result.frames)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Merged(output=ctx.store.uri(output_rel), frames=result.frames, duration_s=result.duration_s)


def _warn_missing_files(manifests: list[DoneManifest | None]) -> None:
    """One warning for the whole job naming the files its chunks' pages asked for and its folder lacks, and
    one naming the URLs they could not load."""
    from helios_kit.composition.deps import missing_files_warning
    from helios_kit.render.load_failures import failed_loads_warning

    done = [manifest for manifest in manifests if manifest is not None]
    missing = missing_files_warning(dep for manifest in done for dep in manifest.dependencies)
    failed = failed_loads_warning(url for manifest in done for url in manifest.failed_loads)
    for warning in (missing, failed):
        if warning:
            log.warning("merge: %s", warning)


def _local_chunk_files(ctx: JobContext, work: Path, cancel: threading.Event | None) -> list[Path]:
    """The chunk outputs as local files: in place for a local store, downloaded into `work` otherwise."""
    inputs: list[Path] = []
    for chunk in ctx.spec.chunks:
        local = ctx.store.local_path(chunk.output_file)
        if local is None:
            if cancel is not None and cancel.is_set():
                raise RenderError("merge: cancelled")
            local = ctx.store.fetch(chunk.output_file, work / "chunks" / chunk.output_file)
        inputs.append(local)
    return inputs


def _audio_plan(ctx: JobContext, last: DoneManifest | None) -> AudioPlan | None:
    """The composition's audio tracks placed on the job's timeline (None when it has none or they cannot be
    read: the merge goes on silent, with a warning). The merge skips this when the chunk that reached the
    job's end (stepping every frame from 0) saw no media element at all; when that chunk's manifest lists
    the elements, the tracks come from them, and only otherwise is the page stepped again in a browser."""
    from helios_kit.render.audio import soundtrack_of_render

    spec = ctx.spec
    end = spec.config.start_frame + spec.config.frame_count  # media met anywhere up to the end
    try:
        plan = soundtrack_of_render(
            ctx.input_location,
            _media_scan(ctx.input_location, last, end),
            fps=spec.config.fps,
            frame_count=end,
            props=spec.config.props,
            seed=spec.config.seed,
        )
    except HeliosError as error:
        log.warning("merge: audio not mixed: %s", error)
        return None
    if not plan.tracks:
        return None
    return plan.model_copy(update={"timeline_start_s": spec.config.start_frame / spec.config.fps})


def _media_scan(input_location: str, last: DoneManifest | None, end: int) -> MediaScan | None:
    """The media the last chunk's page showed, their files looked up in the composition's folder here."""
    from helios_kit.composition.media import MediaScan
    from helios_kit.composition.meta import locate_entry

    if last is None or last.media is None:
        return None
    _url, html_file = locate_entry(input_location)
    root = str(html_file.parent) if html_file is not None else None
    return MediaScan(elements=last.media, frames_stepped=end, root=root)


# ---------------------------------------------------------------------------------------------------
# Where the merge runs


def can_merge_remotely(backend: Backend) -> bool:
    """The backend implements `run_merge` (Lambda, Cloud Run, Dask: every RemoteBackend)."""
    return type(backend).run_merge is not Backend.run_merge


def choose_merge(where: MergeWhere, ctx: JobContext, backend: Backend) -> MergeWhere:
    """LOCAL or REMOTE for this run; RenderError (one line) when remote is asked of a backend that cannot."""
    if where is MergeWhere.REMOTE and not can_merge_remotely(backend):
        raise RenderError(f"--merge remote: backend {backend.name} cannot merge (use --merge local or auto)")
    if where is MergeWhere.AUTO:
        remote = not ctx.store.is_local and can_merge_remotely(backend)
        return MergeWhere.REMOTE if remote else MergeWhere.LOCAL
    return where


#: Seconds of the first wait before the remote merge is tried again (doubling, with jitter).
MERGE_RETRY_DELAY_S = 1.0


def _merge_with_retries(ctx: JobContext, backend: Backend, cancel: threading.Event) -> WorkerResult | None:
    """The backend's merge, tried again (backend.default_retries times, backing off) while it fails in a way
    another attempt may get past: a merge that fails after every chunk is done must not lose the job to one
    transient failure (a killed instance, a network blip)."""

    def again(result: WorkerResult | None) -> bool:
        return result is not None and not result.ok and result.retryable and not result.fatal and not cancel.is_set()

    def say(state: RetryCallState) -> None:
        result = state.outcome.result()  # type: ignore[union-attr]
        delay = state.next_action.sleep if state.next_action else 0.0  # type: ignore[union-attr]
        why = (result.stderr or result.status.value).splitlines()[0] if result is not None else "?"
        log.warning(
            "merge: attempt %d on %s failed (%s); retrying in %.1f s", state.attempt_number, backend.name, why, delay
        )

    retrying = Retrying(
        stop=stop_after_attempt(backend.default_retries + 1),
        wait=wait_exponential(multiplier=MERGE_RETRY_DELAY_S, max=30) + wait_random(0, MERGE_RETRY_DELAY_S),
        retry=retry_if_result(again),
        sleep=cancel.wait,
        before_sleep=say,
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
    )
    return retrying(lambda: backend.run_merge(ctx.spec, ctx.chunk_context(), cancel=cancel))


def merge_remotely(ctx: JobContext, backend: Backend, *, cancel: threading.Event) -> Merged:
    """Ask the backend to merge next to the store, then check that the store holds the output complete."""
    manifests = ctx.input_manifests()
    digest = ctx.merge_digest(manifests)
    if digest is None:
        raise RenderError(f"merge: chunks {id_ranges(ctx.missing_chunks(manifests))} are not complete")
    result = _merge_with_retries(ctx, backend, cancel)
    if result is None:  # the backend merges nowhere but here after all
        return merge_into_store(ctx, cancel=cancel)
    if not result.ok:
        raise RenderError(f"remote merge on {backend.name} failed: {result.stderr or result.status.value}")
    output = ctx.spec.merge.output_file
    ctx.store.forget(output)
    if not ctx.store.is_complete(output, digest):
        raise RenderError(
            f"remote merge on {backend.name} answered ok, but {ctx.store.uri(output)} is not complete in the store "
            "(is the worker's helios-kit older than this client's?)"
        )
    config = ctx.spec.config
    return Merged(
        output=ctx.store.uri(output),
        frames=result.frames or config.frame_count,
        duration_s=config.frame_count / config.fps,
    )
