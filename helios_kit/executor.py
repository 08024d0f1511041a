"""Runs attempts at a job's chunks through a backend: retries with backoff and jitter, per-attempt timeouts, a
concurrency limit, progress events, and cancellation. Nothing else: what a job run is (its context, its doit
tasks, the merge, the report) is :mod:`helios_kit.run`'s.

:class:`ChunkExecutor` runs one chunk at a time per caller (the doit tasks of a run call it from their
runner's threads or processes): it waits for a concurrency slot, calls ``backend.run_chunk``, retries
results whose ``retryable`` is true with exponential backoff plus jitter (tenacity), turns an attempt that
runs past ``chunk_timeout`` into a ``timed_out`` result (the backend sees its cancel event set and must
stop), and emits :class:`~helios_kit.protocol.ProgressEvent` objects to every sink (the progress bar, the
JobManager). A backend that reports frames as it goes (``reports_frames``) gets an ``on_frames`` callback;
each report becomes a FRAMES event with the chunk's frames so far in its current attempt. Setting the job's
cancel event stops scheduling (chunks not started end ``cancelled``) and aborts running attempts.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential, wait_random

from helios_kit.backends.base import Backend, ChunkContext
from helios_kit.protocol import ChunkState, EventKind, EventSink, ProgressEvent, WorkerResult, WorkerStatus
from helios_kit.spec import Chunk, JobSpec
from helios_kit.stragglers import BackupPolicy, Backups

log = logging.getLogger("helios.executor")


class AttemptOptions(BaseModel):
    """How chunks are attempted: how many at once, how often, how long (a run's RunOptions extend these)."""

    concurrency: int | None = Field(None, ge=1, description="Chunks at once (default: the backend's).")
    retries: int | None = Field(
        None, ge=0, description="Extra attempts for a chunk whose failure is retryable (default: the backend's)."
    )
    retry_delay: float = Field(1.0, ge=0, description="First backoff (s); doubles per attempt, plus jitter.")
    retry_max_delay: float = Field(30.0, ge=0)
    chunk_timeout: float | None = Field(None, gt=0, description="Seconds one attempt of a chunk may take.")


class ChunkOutcome(BaseModel):
    """How a chunk ended in this run."""

    chunk_id: int
    state: ChunkState
    attempts: int = 0
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    output_file: str | None = None
    throttles: int = Field(0, description="Times the platform throttled the chunk (backed off, no attempt spent).")
    #: The done-manifest the worker committed, as written (WorkerResult.manifest); not part of reports.
    manifest: str | None = Field(None, exclude=True, repr=False)


class ChunkExecutor:
    """Runs chunks through a backend with retries, timeouts, a concurrency limit, events and cancellation."""

    def __init__(
        self,
        backend: Backend,
        spec: JobSpec,
        context: ChunkContext,
        options: AttemptOptions | None = None,
        *,
        cancel: threading.Event | None = None,
        sinks: Iterable[EventSink] = (),
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.context = context
        self.options = options or AttemptOptions()
        self.cancel = cancel or threading.Event()
        self.sinks = list(sinks)
        self.concurrency = self.options.concurrency or backend.default_concurrency()
        self.retries = self.options.retries if self.options.retries is not None else backend.default_retries
        #: The first job-fatal failure (401/403, access denied): no further chunk is started.
        self.fatal: str | None = None
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.outcomes: dict[int, ChunkOutcome] = {}
        self._attempt_of: dict[int, int] = {}
        self._frames_keyword = _takes_on_frames(backend)
        self.backups: Backups | None = None
        self._linked: set[threading.Event] = set()  # attempts' own stop events, set by a job cancel
        self._linker: threading.Thread | None = None

    def enable_backups(self, policy: BackupPolicy, total: int) -> Backups:
        """Straggler backups (helios_kit.stragglers): a second attempt races a chunk that runs too long."""
        return self.share_backups(Backups(policy, total))

    def share_backups(self, backups: Backups) -> Backups:
        """Race stragglers in `backups`, which other executors may use too (a batch: one median over all the
        videos' chunks); it learns chunk times, and this job's chunks done, from this executor's events."""
        self.backups = backups
        self.sinks.append(backups.sink_for(self.spec.job_id, len(self.spec.chunks)))
        return backups

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
        """The store already holds this chunk complete (the run found it up to date)."""
        self.record(ChunkOutcome(chunk_id=chunk.id, state=ChunkState.SKIPPED, frames=chunk.frame_count))
        self.emit(ProgressEvent(kind=EventKind.SKIPPED, chunk_id=chunk.id, frames=chunk.frame_count))

    # -- running -----------------------------------------------------------------------------------------
    def _acquire_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.05):
            if self.cancel.is_set():
                return False
        return True

    def run_chunk(self, chunk: Chunk, stop: threading.Event | None = None) -> ChunkOutcome:
        """Run `chunk` to completion (with retries); never raises for the chunk's own failure. Setting
        `stop` ends this chunk's attempt as cancelled (its lease was lost, a backup won)."""
        if self.fatal is not None or self.cancel.is_set() or not self._acquire_slot():
            why = f"not started: {self.fatal}" if self.fatal else "cancelled before start"
            outcome = ChunkOutcome(chunk_id=chunk.id, state=ChunkState.CANCELLED, error=why)
            self.emit(ProgressEvent(kind=EventKind.CANCELLED, chunk_id=chunk.id))
            return self.record(outcome)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self.record(self._run_with_retries(chunk, stop))
        finally:
            with self._lock:
                self.active -= 1
            self._slots.release()

    def _run_with_retries(self, chunk: Chunk, stop: threading.Event | None = None) -> ChunkOutcome:
        started = time.monotonic()
        attempts = throttles = 0

        def attempt() -> WorkerResult:
            nonlocal attempts, throttles
            attempts += 1
            self._attempt_of[chunk.id] = attempts
            self.emit(ProgressEvent(kind=EventKind.STARTED, chunk_id=chunk.id, attempt=attempts))
            result = self._attempt(chunk, stop)
            throttles += result.throttles
            return result

        result: WorkerResult = self._retrying(chunk, stop)(attempt)
        duration_ms = (time.monotonic() - started) * 1000
        if result.ok:
            outcome = self._succeeded(chunk, result, attempts, duration_ms)
        elif (
            self.cancel.is_set()
            or (stop is not None and stop.is_set())
            or result.status is WorkerStatus.CANCELLED
            or self._fatal_seen(result)
        ):
            outcome = self._cancelled(chunk, attempts, duration_ms)
        else:
            outcome = self._failed(chunk, result, attempts, duration_ms)
        return outcome.model_copy(update={"throttles": throttles})

    def _fatal_seen(self, result: WorkerResult) -> bool:
        """Record the job's first fatal failure (later chunks are not started); True for a fatal failure
        after the first (reported once, as the first: the other chunks count as cancelled)."""
        if not result.fatal:
            return False
        with self._lock:
            if self.fatal is not None:
                return True
            self.fatal = _first_line(result.stderr) or "a failure no attempt can get past"
        log.debug("job-fatal failure, no further chunk is started: %s", self.fatal)
        return False

    def _retrying(self, chunk: Chunk, stop: threading.Event | None = None) -> Retrying:
        """Tenacity's loop: retry while the result is a retryable failure, exponential backoff plus jitter,
        sleeping on the cancel event (a cancel ends the wait), a RETRYING event before each sleep."""

        def should_retry(result: WorkerResult) -> bool:
            stopped = self.cancel.is_set() or (stop is not None and stop.is_set())
            return not result.ok and result.retryable and not result.fatal and not stopped

        def before_sleep(state: RetryCallState) -> None:
            result: WorkerResult = state.outcome.result()  # type: ignore[union-attr]
            delay = state.next_action.sleep if state.next_action else 0.0  # type: ignore[union-attr]
            log.warning(
                "chunk %s: attempt %d of %d failed (%s); retrying in %.1f s",
                chunk.id,
                state.attempt_number,
                self.retries + 1,
                _first_line(result.stderr) or result.status.value,
                delay,
            )
            self.emit(
                ProgressEvent(
                    kind=EventKind.RETRYING,
                    chunk_id=chunk.id,
                    attempt=state.attempt_number,
                    error=_first_line(result.stderr),
                    delay_s=delay,
                )
            )

        return Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.options.retry_delay, max=self.options.retry_max_delay)
            + wait_random(0, self.options.retry_delay),
            retry=retry_if_result(should_retry),
            sleep=self.cancel.wait,
            before_sleep=before_sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            reraise=False,
        )

    def _succeeded(self, chunk: Chunk, result: WorkerResult, attempts: int, duration_ms: float) -> ChunkOutcome:
        """RENDERED, or SKIPPED when this run rendered nothing for the chunk: the worker found it complete on
        the first attempt. After an earlier attempt of this run (one that timed out after its commit, a
        worker killed while reporting, a lost answer), a worker's skip is that attempt's own commit."""
        skipped = result.status is WorkerStatus.SKIPPED and attempts == 1
        frames = result.frames or chunk.frame_count
        self.emit(
            ProgressEvent(
                kind=EventKind.SKIPPED if skipped else EventKind.RENDERED,
                chunk_id=chunk.id,
                attempt=attempts,
                frames=frames,
                duration_ms=duration_ms,
                output=result.output_file,
            )
        )
        return ChunkOutcome(
            chunk_id=chunk.id,
            state=ChunkState.SKIPPED if skipped else ChunkState.RENDERED,
            attempts=attempts,
            frames=frames,
            duration_ms=duration_ms,
            output_file=result.output_file,
            manifest=result.manifest,
        )

    def _cancelled(self, chunk: Chunk, attempts: int, duration_ms: float) -> ChunkOutcome:
        self.emit(ProgressEvent(kind=EventKind.CANCELLED, chunk_id=chunk.id, attempt=attempts, duration_ms=duration_ms))
        return ChunkOutcome(
            chunk_id=chunk.id, state=ChunkState.CANCELLED, attempts=attempts, duration_ms=duration_ms, error="cancelled"
        )

    def _failed(self, chunk: Chunk, result: WorkerResult, attempts: int, duration_ms: float) -> ChunkOutcome:
        why = _first_line(result.stderr) or result.status.value
        error = f"chunk {chunk.id} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {why}"
        if result.fatal:
            error += " (the job stops here: no other chunk can succeed)"
        self.emit(
            ProgressEvent(
                kind=EventKind.FAILED, chunk_id=chunk.id, attempt=attempts, duration_ms=duration_ms, error=error
            )
        )
        return ChunkOutcome(
            chunk_id=chunk.id, state=ChunkState.FAILED, attempts=attempts, duration_ms=duration_ms, error=error
        )

    def _attempt(self, chunk: Chunk, chunk_stop: threading.Event | None = None) -> WorkerResult:
        """One call of the backend, bounded by the chunk timeout, the job's cancel event and `chunk_stop`."""
        timeout = self.options.chunk_timeout
        if not timeout:  # no deadline: no watcher thread; the job's cancel (or the chunk's own stop) is enough
            return self._attempt_untimed(chunk, chunk_stop)
        stop = threading.Event()
        done = threading.Event()
        timed_out = threading.Event()
        watcher = threading.Thread(
            target=self._watch,
            args=(stop, done, timed_out, time.monotonic() + timeout if timeout else float("inf"), chunk_stop),
            daemon=True,
        )
        watcher.start()
        try:
            result = self._call(chunk, stop, timeout)
        finally:
            done.set()
            watcher.join()
        if timed_out.is_set() and not result.ok:
            return WorkerResult.timed_out(chunk.id, f"timed out after {timeout:g} s", duration_ms=result.duration_ms)
        if (self.cancel.is_set() or (chunk_stop is not None and chunk_stop.is_set())) and not result.ok:
            return WorkerResult.cancelled(chunk.id)
        return result

    def _attempt_untimed(self, chunk: Chunk, chunk_stop: threading.Event | None) -> WorkerResult:
        """An attempt without a deadline. With a chunk stop or backups it gets its own event, which the job's
        cancel sets too (one linking thread per executor, no polling per attempt)."""
        own = chunk_stop is not None or self.backups is not None
        stop = (chunk_stop or threading.Event()) if own else self.cancel
        if own:
            self._link_cancel(stop)
        try:
            result = self._call(chunk, stop, None)
        finally:
            if own:
                with self._lock:
                    self._linked.discard(stop)
        if (self.cancel.is_set() or stop.is_set()) and not result.ok:
            return WorkerResult.cancelled(chunk.id)
        return result

    def _link_cancel(self, event: threading.Event) -> None:
        """Set `event` when the job is cancelled."""
        with self._lock:
            self._linked.add(event)
            if self._linker is None:
                self._linker = threading.Thread(target=self._cancel_linked, name="helios-cancel-link", daemon=True)
                self._linker.start()
        if self.cancel.is_set():
            event.set()

    def _cancel_linked(self) -> None:
        self.cancel.wait()
        with self._lock:
            for event in self._linked:
                event.set()

    def _watch(
        self,
        stop: threading.Event,
        done: threading.Event,
        timed_out: threading.Event,
        deadline: float,
        chunk_stop: threading.Event | None = None,
    ) -> None:
        """Set `stop` (the attempt's cancel event) when the job is cancelled, `chunk_stop` is set or the
        attempt's deadline passes."""
        while not done.wait(0.05):
            if self.cancel.is_set() or (chunk_stop is not None and chunk_stop.is_set()):
                stop.set()
                return
            if time.monotonic() >= deadline:
                timed_out.set()
                stop.set()
                return

    def _frames_reporter(self, chunk: Chunk) -> dict[str, Any]:
        """`{"on_frames": callback}` for a backend that reports frames (FRAMES events), else nothing."""
        if not self._frames_keyword:
            return {}
        attempt = self._attempt_of.get(chunk.id, 0)

        def on_frames(frames: int) -> None:
            self.emit(ProgressEvent(kind=EventKind.FRAMES, chunk_id=chunk.id, attempt=attempt, frames=frames))

        return {"on_frames": on_frames}

    def _call(self, chunk: Chunk, cancel: threading.Event, timeout: float | None) -> WorkerResult:
        """One attempt on the backend, which a backup attempt may race (straggler backups enabled)."""
        if self.backups is None:
            return self._call_backend(chunk, cancel, timeout)
        return self.backups.call(self.spec.job_id, chunk, cancel, timeout, self._call_backend)

    def _call_backend(self, chunk: Chunk, cancel: threading.Event, timeout: float | None) -> WorkerResult:
        extra = self._frames_reporter(chunk)
        try:
            return self.backend.run_chunk(self.spec, chunk, self.context, cancel=cancel, timeout=timeout, **extra)
        except Exception as error:  # a backend bug is a failed attempt, not a crashed job
            log.debug("backend %s raised on chunk %s", self.backend.name, chunk.id, exc_info=True)
            return WorkerResult.from_error(chunk.id, error)


def _takes_on_frames(backend: Backend) -> bool:
    """Whether `backend` says it reports frames and its run_chunk really takes `on_frames`."""
    if not getattr(backend, "reports_frames", False):
        return False
    try:
        parameters = inspect.signature(backend.run_chunk).parameters
    except (TypeError, ValueError):
        return False
    return "on_frames" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
