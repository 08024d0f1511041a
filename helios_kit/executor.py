"""Executes a job's chunks through a backend: retries with backoff and jitter, per-chunk timeouts, a
concurrency limit, progress events, and cancellation.

:class:`ChunkExecutor` runs one chunk at a time per caller (the doit tasks of :mod:`helios_kit.dag` call it
from their runner's threads or processes): it waits for a concurrency slot, calls ``backend.run_chunk``,
retries retryable failures with exponential backoff plus jitter (tenacity), turns an attempt that runs past
``chunk_timeout`` into a retryable failure (the backend sees its cancel event set and must stop), and emits
:class:`ProgressEvent` objects to every sink (the rich progress bar, the JobManager). Setting the job's
cancel event stops scheduling (chunks not started return ``cancelled``) and aborts running attempts.

:func:`execute_job` is the whole run: resolve the job's context, build the DAG, run it with doit, and
return a :class:`JobReport` whose :meth:`JobReport.summary_line` is what `helios job run` prints last.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential, wait_random

from helios_kit.backends.base import Backend, ChunkContext
from helios_kit.protocol import EventKind, EventSink, ProgressEvent, WorkerResult, WorkerStatus
from helios_kit.repository import ChunkState
from helios_kit.spec import Chunk, JobSpec

if TYPE_CHECKING:
    from helios_kit.dag import JobContext

log = logging.getLogger("helios.executor")


class RunOptions(BaseModel):
    """How a job runs (the backend-independent flags of `helios job run`)."""

    concurrency: int | None = Field(None, ge=1, description="Chunks at once (default: the backend's).")
    retries: int = Field(2, ge=0, description="Extra attempts for a chunk whose failure is retryable.")
    retry_delay: float = Field(1.0, ge=0, description="First backoff (s); doubles per attempt, plus jitter.")
    retry_max_delay: float = Field(30.0, ge=0)
    chunk_timeout: float | None = Field(None, gt=0, description="Seconds one attempt of a chunk may take.")
    force: bool = False
    chunks: list[int] | None = Field(None, description="Only these chunk ids (default: all).")
    store: str | None = None
    merge: bool = Field(True, description="Merge when every chunk is complete (False: render chunks only).")


class ChunkOutcome(BaseModel):
    """How a chunk ended in this run."""

    chunk_id: int
    state: ChunkState
    attempts: int = 0
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    output_file: str | None = None


class MergeOutcome(BaseModel):
    output: str | None = None
    frames: int = 0
    duration_s: float = 0.0
    skipped: bool = False
    error: str | None = None
    pending: str | None = Field(None, description="Why the merge did not run (chunks left to render).")

    @property
    def ok(self) -> bool:
        return self.error is None


class JobReport(BaseModel):
    """Everything one run did; `summary_line()` is the CLI's last line."""

    job_id: str
    total_chunks: int
    chunks: list[ChunkOutcome] = Field(default_factory=list)
    merge: MergeOutcome | None = None
    cancelled: bool = False
    error: str | None = None
    duration_ms: float = 0.0
    merge_requested: bool = True

    def count(self, *states: ChunkState) -> int:
        return sum(1 for outcome in self.chunks if outcome.state in states)

    @property
    def rendered(self) -> int:
        return self.count(ChunkState.RENDERED)

    @property
    def skipped(self) -> int:
        return self.count(ChunkState.SKIPPED)

    @property
    def failed(self) -> int:
        return self.count(ChunkState.FAILED)

    @property
    def ok(self) -> bool:
        return not self.cancelled and self.error is None and self.failed == 0 and (self.merge is None or self.merge.ok)

    def summary_line(self) -> str:
        line = (
            f"{self.total_chunks} chunks: {self.rendered} rendered, {self.skipped} skipped (complete), "
            f"{self.failed} failed"
        )
        cancelled = self.count(ChunkState.CANCELLED)
        if self.cancelled or cancelled:
            line += f", {cancelled} cancelled"
        merge = self.merge
        if self.cancelled:
            line += "; job cancelled"
        elif merge is None and not self.merge_requested:
            line += "; not merged (--no-merge)"
        elif merge is None or merge.pending:
            why = merge.pending if merge and merge.pending else ("chunks failed" if self.failed else "not run")
            line += f"; not merged ({why})"
        elif merge.error:
            line += f"; merge failed: {merge.error}"
        else:
            note = ", up to date" if merge.skipped else ""
            line += f"; merged → {merge.output} ({merge.frames} frames, {merge.duration_s:.3f} s{note})"
        if self.error and not self.cancelled:
            line += f"; error: {self.error}"
        return line


class ChunkExecutor:
    """Runs chunks through a backend with retries, timeouts, a concurrency limit, events and cancellation."""

    def __init__(
        self,
        backend: Backend,
        spec: JobSpec,
        context: ChunkContext,
        options: RunOptions | None = None,
        *,
        cancel: threading.Event | None = None,
        sinks: Iterable[EventSink] = (),
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.context = context
        self.options = options or RunOptions()
        self.cancel = cancel or threading.Event()
        self.sinks = list(sinks)
        self.concurrency = self.options.concurrency or backend.default_concurrency()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.outcomes: dict[int, ChunkOutcome] = {}
        self.merge: MergeOutcome | None = None

    # -- events ----------------------------------------------------------------------------------------
    def emit(self, event: ProgressEvent) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken progress display never breaks the job
                log.exception("progress sink %r failed on %s", sink, event.kind)

    def record(self, outcome: ChunkOutcome) -> ChunkOutcome:
        with self._lock:
            self.outcomes[outcome.chunk_id] = outcome
        return outcome

    def mark_skipped(self, chunk: Chunk) -> None:
        """The store already holds this chunk complete (the DAG found it up to date)."""
        self.record(ChunkOutcome(chunk_id=chunk.id, state=ChunkState.SKIPPED, frames=chunk.frame_count))
        self.emit(ProgressEvent(kind=EventKind.SKIPPED, chunk_id=chunk.id, frames=chunk.frame_count))

    # -- running -----------------------------------------------------------------------------------------
    def _acquire_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.05):
            if self.cancel.is_set():
                return False
        return True

    def run_chunk(self, chunk: Chunk) -> ChunkOutcome:
        """Run `chunk` to completion (with retries); never raises for the chunk's own failure."""
        if self.cancel.is_set() or not self._acquire_slot():
            outcome = ChunkOutcome(chunk_id=chunk.id, state=ChunkState.CANCELLED, error="cancelled before start")
            self.emit(ProgressEvent(kind=EventKind.CANCELLED, chunk_id=chunk.id))
            return self.record(outcome)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self.record(self._run_with_retries(chunk))
        finally:
            with self._lock:
                self.active -= 1
            self._slots.release()

    def _run_with_retries(self, chunk: Chunk) -> ChunkOutcome:
        started = time.monotonic()
        attempts = 0

        def attempt() -> WorkerResult:
            nonlocal attempts
            attempts += 1
            self.emit(ProgressEvent(kind=EventKind.STARTED, chunk_id=chunk.id, attempt=attempts))
            return self._attempt(chunk)

        def should_retry(result: WorkerResult) -> bool:
            return not result.ok and result.retryable and not self.cancel.is_set()

        def before_sleep(state: RetryCallState) -> None:
            result: WorkerResult = state.outcome.result()  # type: ignore[union-attr]
            delay = state.next_action.sleep if state.next_action else 0.0  # type: ignore[union-attr]
            self.emit(
                ProgressEvent(
                    kind=EventKind.RETRYING,
                    chunk_id=chunk.id,
                    attempt=state.attempt_number,
                    error=_first_line(result.stderr),
                    delay_s=delay,
                )
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.options.retries + 1),
            wait=wait_exponential(multiplier=self.options.retry_delay, max=self.options.retry_max_delay)
            + wait_random(0, self.options.retry_delay),
            retry=retry_if_result(should_retry),
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            reraise=False,
        )
        result: WorkerResult = retrying(attempt)
        duration_ms = (time.monotonic() - started) * 1000
        if result.ok:
            skipped = result.status is WorkerStatus.SKIPPED
            state = ChunkState.SKIPPED if skipped else ChunkState.RENDERED
            kind = EventKind.SKIPPED if skipped else EventKind.RENDERED
            frames = result.frames or chunk.frame_count
            self.emit(
                ProgressEvent(
                    kind=kind,
                    chunk_id=chunk.id,
                    attempt=attempts,
                    frames=frames,
                    duration_ms=duration_ms,
                    output=result.output_file,
                )
            )
            return ChunkOutcome(
                chunk_id=chunk.id,
                state=state,
                attempts=attempts,
                frames=frames,
                duration_ms=duration_ms,
                output_file=result.output_file,
            )
        error = _first_line(result.stderr) or result.status.value
        if self.cancel.is_set() or result.status is WorkerStatus.CANCELLED:
            self.emit(
                ProgressEvent(kind=EventKind.CANCELLED, chunk_id=chunk.id, attempt=attempts, duration_ms=duration_ms)
            )
            return ChunkOutcome(
                chunk_id=chunk.id,
                state=ChunkState.CANCELLED,
                attempts=attempts,
                duration_ms=duration_ms,
                error="cancelled",
            )
        error = f"chunk {chunk.id} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {error}"
        self.emit(
            ProgressEvent(
                kind=EventKind.FAILED, chunk_id=chunk.id, attempt=attempts, duration_ms=duration_ms, error=error
            )
        )
        return ChunkOutcome(
            chunk_id=chunk.id, state=ChunkState.FAILED, attempts=attempts, duration_ms=duration_ms, error=error
        )

    def _sleep(self, seconds: float) -> None:
        self.cancel.wait(seconds)

    def _attempt(self, chunk: Chunk) -> WorkerResult:
        """One call of the backend, bounded by the chunk timeout and the job's cancel event."""
        timeout = self.options.chunk_timeout
        if not timeout:  # the job's cancel event is all the backend needs: no watcher thread
            try:
                result = self.backend.run_chunk(self.spec, chunk, self.context, cancel=self.cancel, timeout=None)
            except Exception as error:
                log.debug("backend %s raised on chunk %s", self.backend.name, chunk.id, exc_info=True)
                result = WorkerResult.from_error(chunk.id, error)
            if self.cancel.is_set() and not result.ok:
                return WorkerResult.cancelled(chunk.id)
            return result
        stop = threading.Event()
        done = threading.Event()
        timed_out = threading.Event()
        deadline = time.monotonic() + timeout

        def watch() -> None:
            while not done.wait(0.05):
                if self.cancel.is_set():
                    stop.set()
                    return
                if time.monotonic() >= deadline:
                    timed_out.set()
                    stop.set()
                    return

        watcher = threading.Thread(target=watch, name=f"helios-watch-{chunk.id}", daemon=True)
        watcher.start()
        try:
            result = self.backend.run_chunk(self.spec, chunk, self.context, cancel=stop, timeout=timeout)
        except Exception as error:  # a backend bug is a failed attempt, not a crashed job
            log.debug("backend %s raised on chunk %s", self.backend.name, chunk.id, exc_info=True)
            result = WorkerResult.from_error(chunk.id, error)
        finally:
            done.set()
            watcher.join()
        if timed_out.is_set() and not result.ok:
            return WorkerResult.timed_out(chunk.id, f"timed out after {timeout:g} s", duration_ms=result.duration_ms)
        if self.cancel.is_set() and not result.ok:
            return WorkerResult.cancelled(chunk.id)
        return result


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------------
# Progress display


class RichProgress:
    """An event sink drawing chunks and frames done, frames/s and ETA with rich (on stderr)."""

    def __init__(self, spec: JobSpec, *, console: Any = None, selected: Iterable[int] | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        ids = set(selected) if selected is not None else {chunk.id for chunk in spec.chunks}
        frames = sum(chunk.frame_count for chunk in spec.chunks if chunk.id in ids)
        # the real stderr, fixed now, and no stream redirection: workers' threads may write while the bar draws
        self.console = console or Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.chunks_task = self.progress.add_task("chunks", total=len(ids), rate="")
        self.frames_task = self.progress.add_task("frames", total=frames, rate="")
        self.started = time.monotonic()
        self.rendered_frames = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind in (EventKind.RENDERED, EventKind.SKIPPED):
            self.progress.advance(self.chunks_task)
            self.progress.advance(self.frames_task, event.frames)
            if event.kind is EventKind.RENDERED:
                self.rendered_frames += event.frames
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.progress.update(self.frames_task, rate=f"{self.rendered_frames / elapsed:.1f} frames/s")
        elif event.kind in (EventKind.RETRYING, EventKind.FAILED):
            self.progress.console.print(
                f"chunk {event.chunk_id}: {event.kind.value}: {event.error}"
                + (f" (next try in {event.delay_s:.1f} s)" if event.delay_s else "")
            )
        elif event.kind is EventKind.MERGE_STARTED:
            self.progress.console.print("merging…")


# ---------------------------------------------------------------------------------------------------
# The whole job


def execute_job(
    spec: JobSpec,
    job_url: str,
    job_dir: Path,
    backend: Backend,
    options: RunOptions | None = None,
    *,
    cancel: threading.Event | None = None,
    sinks: Iterable[EventSink] = (),
    context: JobContext | None = None,
) -> JobReport:
    """Render what is not complete, then merge; returns the report (raises only for user errors up front)."""
    from helios_kit.dag import JobContext, run_job_dag

    options = options or RunOptions()
    started = time.monotonic()
    if options.chunks is not None:
        for chunk_id in options.chunks:
            spec.chunk(chunk_id)  # SpecError naming the ids that exist
    ctx = context or JobContext.prepare(spec, job_url, job_dir, store_url=options.store, force=options.force)
    try:
        ctx.store.check_writable()
        executor = ChunkExecutor(backend, spec, ctx.chunk_context(), options, cancel=cancel, sinks=sinks)
        error = run_job_dag(ctx, executor, chunk_ids=options.chunks)
    finally:
        if context is None:
            ctx.close()
    selected = options.chunks if options.chunks is not None else [chunk.id for chunk in spec.chunks]
    outcomes = []
    for chunk_id in selected:
        outcome = executor.outcomes.get(chunk_id)
        if outcome is None:  # doit never reached it (cancelled while scheduling)
            outcome = ChunkOutcome(
                chunk_id=chunk_id,
                state=ChunkState.CANCELLED if executor.cancel.is_set() else ChunkState.FAILED,
                error=error or "not run",
            )
        outcomes.append(outcome)
    return JobReport(
        job_id=spec.job_id,
        total_chunks=len(selected),
        chunks=outcomes,
        merge=executor.merge,
        cancelled=executor.cancel.is_set(),
        error=error,
        duration_ms=(time.monotonic() - started) * 1000,
        merge_requested=options.merge,
    )
