"""JobManager: create, run, submit (background), get, list, cancel and delete runs of render jobs.

Each `create` starts a new run (its own ``run_id`` under the job's id). The manager turns the executor's
progress events into :class:`~helios_kit.repository.JobStatus` run records (state pending → running →
completed / failed / cancelled, progress 0-100, chunks done, per-chunk state, attempts, worker and log tail,
created / started / finished times, the result) and keeps them in a
:class:`~helios_kit.repository.JobRepository`. A running run records its pid and host and beats a
heartbeat; readers (`get`, `list`) show a run whose owner is gone as ``interrupted``
(:mod:`helios_kit.liveness`). A running run polls the repository's cancel flag, so `helios job cancel <id>`
from another process stops it within a poll interval. Repository writes are best effort: a failing write
is logged and added to the status's ``warnings``; it never stops or corrupts the render (the artifact
store, not the repository, says what is done).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helios_kit.backends.base import Backend
from helios_kit.errors import HeliosError, SpecError
from helios_kit.liveness import HEARTBEAT_S, observe, pid_alive
from helios_kit.plugins import make_backend
from helios_kit.pricing import CostMeter, Pricing
from helios_kit.protocol import EventKind, ProgressEvent
from helios_kit.repository import (
    ChunkState,
    ChunkStatus,
    InMemoryJobRepository,
    JobRepository,
    JobResultInfo,
    JobState,
    JobStatus,
    this_host,
    utcnow,
)
from helios_kit.run import JobReport, RunOptions, execute_job
from helios_kit.spec import JobSpec, dump

log = logging.getLogger("helios.manager")

#: Seconds between repository writes of progress (the final state is always written).
SAVE_INTERVAL_S = 0.5


@dataclass
class _Prepared:
    spec: JobSpec
    job_url: str
    job_dir: Path
    backend: Backend
    options: RunOptions
    owns_backend: bool = False
    status: JobStatus | None = None


__all__ = ["JobManager", "pid_alive"]


class JobManager:
    """Jobs and their records. Safe to use from several threads; one manager runs many jobs."""

    def __init__(
        self,
        repository: JobRepository | None = None,
        *,
        poll_interval: float = 0.5,
        sinks: tuple[Any, ...] = (),
    ) -> None:
        self.repository = repository if repository is not None else InMemoryJobRepository()
        self.poll_interval = poll_interval
        self.sinks = sinks
        self._prepared: dict[str, _Prepared] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._reports: dict[str, JobReport] = {}
        self._signalled: set[str] = set()
        self._lock = threading.Lock()

    # -- records -------------------------------------------------------------------------------------
    def _save(self, status: JobStatus) -> None:
        """Write `status`; a failure is logged and kept in its warnings, never raised."""
        status.updated_at = utcnow()
        try:
            self.repository.save(status)
        except Exception as error:
            message = f"job record not saved: {type(error).__name__}: {error}"
            log.warning("%s: %s", status.id, message)
            if message not in status.warnings:
                status.warnings.append(message)

    def get(self, key: str) -> JobStatus:
        """Run `key` (a run id, or a job id: its latest run), `interrupted` when its owner is gone."""
        return observe(self.repository.get(key))

    def list(self) -> list[JobStatus]:
        """Every run, newest first."""
        return [observe(status) for status in self.repository.list()]

    def runs(self, job_id: str) -> list[JobStatus]:
        """The runs of one job, newest first."""
        return [observe(status) for status in self.repository.runs(job_id)]

    def recent(self, limit: int) -> list[JobStatus]:
        """The newest `limit` runs, newest first."""
        return [observe(status) for status in self.repository.recent(limit)]

    def prepared_spec(self, job_id: str) -> JobSpec:
        """The spec `create` loaded for `job_id` (callers observing the run need not load it again)."""
        with self._lock:
            prepared = self._prepared.get(job_id)
        if prepared is None:
            raise SpecError(f"job {job_id}: not created by this manager")
        return prepared.spec

    def report(self, job_id: str) -> JobReport | None:
        """The executor's report of a run made by this manager (None before it ends)."""
        return self._reports.get(job_id)

    # -- lifecycle -----------------------------------------------------------------------------------
    def create(
        self,
        source: str | os.PathLike[str] | JobSpec,
        *,
        backend: str | Backend = "local",
        backend_options: dict[str, Any] | None = None,
        options: RunOptions | None = None,
        job_dir: str | Path | None = None,
        run_id: str | None = None,
    ) -> JobStatus:
        """Load and check a job (spec, chunk ids, backend and its options) and record a new run of it as
        pending (`run_id`: go on with that recorded run, as a detached `helios job run` does)."""
        from helios_kit.composition.locations import is_local, local_path
        from helios_kit.loaders import load_spec

        if isinstance(source, JobSpec):
            if job_dir is None:
                raise SpecError("job_dir: required when creating a job from a JobSpec object")
            # workers load jobs by URL: keep this one beside its composition (job files are not content)
            spec, directory = source, Path(job_dir).resolve()
            job_file = directory / f".helios-job-{spec.job_id}.json"
            dump(spec, job_file)
            job_url = str(job_file)
        else:
            text = os.fspath(source)
            job_url = str(local_path(text).resolve()) if is_local(text) else text
            spec, directory = load_spec(job_url)
        options = options or RunOptions()
        if options.chunks is not None:
            for chunk_id in options.chunks:
                spec.chunk(chunk_id)
        backend_obj = backend if isinstance(backend, Backend) else make_backend(backend, backend_options)
        status = _run_record(spec, job_url, directory, backend_obj.name, options)
        if run_id:
            status.run_id = run_id
            status.created_at = self._created_at(run_id, spec.job_id) or status.created_at
        with self._lock:
            running = self._threads.get(spec.job_id)
            if running is not None and running.is_alive():
                raise SpecError(f"job {spec.job_id} is already running in this process")
            self._prepared[spec.job_id] = _Prepared(
                spec,
                job_url,
                directory,
                backend_obj,
                options,
                owns_backend=not isinstance(backend, Backend),
                status=status,
            )
            self._signalled.discard(spec.job_id)
            self._cancel[spec.job_id] = threading.Event()
        self._save(status)
        return status

    def _created_at(self, run_id: str, job_id: str) -> Any:
        """When a recorded run `run_id` of `job_id` was created (None when there is no such record)."""
        try:
            recorded = self.repository.get(run_id)
        except Exception:
            return None
        return recorded.created_at if recorded.run_id == run_id and recorded.id == job_id else None

    def run(self, job_id: str, *, status: JobStatus | None = None) -> JobStatus:
        """Run a created job in this thread until it ends; returns its final status."""
        with self._lock:
            prepared = self._prepared.get(job_id)
            cancel = self._cancel.setdefault(job_id, threading.Event())
        if prepared is None:
            raise SpecError(f"job {job_id} was not created by this manager (create or submit it first)")
        if status is None:
            status = prepared.status or JobStatus(id=job_id, total_chunks=len(prepared.spec.chunks))
        tracker = _StatusTracker(self, status, prepared.spec, type(prepared.backend).pricing())
        status.state = JobState.RUNNING
        status.pid, status.host = os.getpid(), this_host()
        status.started_at = status.heartbeat_at = utcnow()
        status.error = None
        status.result = None
        self._save(status)
        stop_polling = threading.Event()
        poller = threading.Thread(
            target=self._poll_cancel,
            args=(job_id, cancel, stop_polling, tracker),
            name=f"helios-cancel-{job_id}",
            daemon=True,
        )
        poller.start()
        report: JobReport | None = None
        try:
            report = execute_job(
                prepared.spec,
                prepared.job_url,
                prepared.job_dir,
                prepared.backend,
                prepared.options,
                cancel=cancel,
                sinks=[tracker, *self.sinks],
            )
        except HeliosError as error:
            status.state = JobState.FAILED
            status.error = str(error)
        except Exception as error:  # never leave a record in `running`
            log.exception("job %s crashed", job_id)
            status.state = JobState.FAILED
            status.error = f"{type(error).__name__}: {error}"
        finally:
            stop_polling.set()
            poller.join()
            with self._lock:
                self._prepared.pop(job_id, None)
            if prepared.owns_backend:  # made here from a name: release its clients and processes
                try:
                    prepared.backend.close()
                except Exception:
                    log.warning("%s: closing backend %s failed", job_id, prepared.backend.name, exc_info=True)
        if report is not None:
            self._reports[job_id] = report
            tracker.finish(report)
        status.finished_at = status.heartbeat_at = utcnow()
        self._save(status)
        return status

    def _poll_cancel(
        self, job_id: str, cancel: threading.Event, stop: threading.Event, tracker: _StatusTracker
    ) -> None:
        """Set `cancel` when a signal asked (checked every 0.1 s) or the run's flag in the repository is up;
        beat the run's heartbeat every HEARTBEAT_S (until the run ends, also after a cancel)."""
        next_check = next_beat = 0.0
        run_id = tracker.status.run_id
        while not stop.wait(0.1):
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                tracker.heartbeat()
            if cancel.is_set():
                continue
            if job_id in self._signalled:
                cancel.set()
                continue
            if now < next_check:
                continue
            next_check = now + self.poll_interval
            try:
                if self.repository.cancel_requested(run_id):
                    cancel.set()
            except Exception as error:
                log.debug("%s: cannot poll the cancel flag: %s", job_id, error)

    def stop_from_signal(self, job_id: str) -> None:
        """Ask a job run here to stop; safe inside a signal handler (takes no lock, the poller acts on it)."""
        self._signalled.add(job_id)

    def submit(self, source: str | os.PathLike[str] | JobSpec, **kwargs: Any) -> str:
        """Create the job and run it in a background thread; returns its id at once."""
        status = self.create(source, **kwargs)
        thread = threading.Thread(
            target=self.run, args=(status.id,), kwargs={"status": status}, name=f"helios-job-{status.id}", daemon=True
        )
        with self._lock:
            self._threads[status.id] = thread
        thread.start()
        return status.id

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until a job submitted here ends (or `timeout`); returns its latest record."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def cancel(self, key: str) -> JobStatus:
        """Ask a run (a run id, or a job id: its latest run) to stop: here at once, in another process
        through the run's flag in the repository.

        A pending run, or one whose owner is gone (`interrupted`), is marked cancelled directly.
        """
        status = self.get(key)  # JobNotFoundError for an unknown id
        if status.state.finished:
            return status
        job_id = status.id
        self.repository.set_cancel_requested(status.run_id, True)
        event = self._cancel.get(job_id)
        running_here = job_id in self._threads and self._threads[job_id].is_alive()
        if event is not None:
            event.set()
        gone = status.state is JobState.INTERRUPTED  # pid gone on its host, or its heartbeat stopped
        if gone and status.backend != "local":
            _tell_remote_workers(status)
        if not running_here and (status.state is JobState.PENDING or gone):
            if status.state is JobState.PENDING and event is None and pid_alive(status.pid):
                return status  # a detached run starting up: it sees the flag on its first poll
            status.state = JobState.CANCELLED
            status.error = "cancelled"
            status.finished_at = status.finished_at or utcnow()
            self._save(status)
        return status

    def delete(self, key: str) -> None:
        """Forget a run, or every run of a job id (cancelling it first when it still runs here)."""
        job_id = self.repository.get(key).id
        if job_id in self._threads and self._threads[job_id].is_alive():
            self.cancel(job_id)
            self._threads[job_id].join(30)
        self.repository.delete(key)
        with self._lock:
            self._threads.pop(job_id, None)
            self._cancel.pop(job_id, None)
            self._reports.pop(job_id, None)


def _tell_remote_workers(status: JobStatus) -> None:
    """A run whose client is gone cannot stop its remote invocations itself: write the job's cancel marker
    in the run's store, which its workers watch between frames (helios_kit.cancel_marker)."""
    if not status.store:
        return
    from helios_kit.cancel_marker import write_marker
    from helios_kit.store import ArtifactStore

    try:
        write_marker(ArtifactStore(status.store), status.id, reason="cancelled (its client is gone)")
    except Exception as error:  # the record is still cancelled; say the workers may run on
        log.warning(
            "%s: cannot write the cancel marker to %s (%s); remote workers may run on", status.id, status.store, error
        )


def _default_store(job_url: str, job_dir: Path) -> str:
    """Where a run's chunk outputs land when no store is given (the run's own rule; the job dir otherwise)."""
    from helios_kit.composition.locations import default_store_url

    try:
        return default_store_url(job_url)
    except HeliosError:
        return str(job_dir)


def _run_record(spec: JobSpec, job_url: str, job_dir: Path, backend: str, options: RunOptions) -> JobStatus:
    """A new pending run of `spec`: its selected chunks, frames, store and output."""
    selected = options.chunks if options.chunks is not None else [chunk.id for chunk in spec.chunks]
    store = options.store or _default_store(job_url, job_dir)
    return JobStatus(
        id=spec.job_id,
        total_chunks=len(selected),
        chunks=[_chunk_record(spec, chunk_id, store) for chunk_id in selected],
        job_url=job_url,
        backend=backend,
        output=spec.merge.output_file,
        store=store,
        total_frames=sum(spec.chunk(chunk_id).frame_count for chunk_id in selected),
    )


def _chunk_record(spec: JobSpec, chunk_id: int, store: str) -> ChunkStatus:
    """A pending chunk's record: its frames and where its output will be in the store."""
    from helios_kit.composition.locations import is_local

    chunk = spec.chunk(chunk_id)
    where = os.path.join(store, chunk.output_file) if is_local(store) else f"{store.rstrip('/')}/{chunk.output_file}"
    return ChunkStatus(id=chunk_id, frames=chunk.frame_count, output_file=where)


#: Lines of attempt messages kept per chunk.
LOG_TAIL_LINES = 20


class _StatusTracker:
    """Progress events → the job's status record (throttled writes)."""

    def __init__(self, manager: JobManager, status: JobStatus, spec: JobSpec, pricing: Pricing | None = None) -> None:
        self.manager = manager
        self.status = status
        self.spec = spec
        self.cost = CostMeter(pricing) if pricing is not None else None  # backends that bill per chunk
        status.cost_usd = 0.0 if self.cost is not None else None
        self.by_id = {chunk.id: chunk for chunk in status.chunks}
        self.lock = threading.Lock()
        self.last_save = 0.0
        self.done = 0  # chunks in a final state, counted as they change (a 10,000-chunk job sends 10,000 events)
        for chunk in status.chunks:
            chunk.state = ChunkState.PENDING
            chunk.attempts = 0
            chunk.error = None
            chunk.retrying = False
            chunk.log_tail = []
        status.done_frames = status.rendered_frames = 0

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            chunk = self.by_id.get(event.chunk_id) if event.chunk_id is not None else None
            if chunk is not None:
                self.done -= chunk.state.done
                self._apply(chunk, event)
                self.done += chunk.state.done
            self.status.completed_chunks = self.done
            if self.cost is not None:
                self.cost(event)
                self.status.cost_usd = round(self.cost.running_cost(), 6)
            total = max(self.status.total_chunks, 1)
            self.status.progress = round(min(99.0, 100.0 * self.done / total), 1)
            now = time.monotonic()
            if now - self.last_save >= SAVE_INTERVAL_S or event.kind in (EventKind.FAILED, EventKind.MERGE_STARTED):
                self.last_save = now
                self.status.heartbeat_at = utcnow()
                self.manager._save(self.status)

    def _apply(self, chunk: ChunkStatus, event: ProgressEvent) -> None:
        """One event on one chunk's record: state, attempts, worker, times, frames, the log tail."""
        kind = event.kind
        if kind is EventKind.STARTED:
            chunk.state, chunk.attempts, chunk.retrying = ChunkState.RUNNING, event.attempt, event.attempt > 1
            chunk.started_at = chunk.started_at or utcnow()
            chunk.worker = getattr(event, "worker", None) or f"{self.status.backend}@{self.status.host}"
        elif kind in (EventKind.RENDERED, EventKind.SKIPPED):
            chunk.state = ChunkState.RENDERED if kind is EventKind.RENDERED else ChunkState.SKIPPED
            chunk.frames, chunk.retrying = event.frames or chunk.frames, False
            chunk.duration_ms = event.duration_ms or chunk.duration_ms
            chunk.output_file = event.output or chunk.output_file
            self.status.done_frames += chunk.frames
            if kind is EventKind.RENDERED:
                self.status.rendered_frames += chunk.frames
        elif kind is EventKind.FAILED:
            chunk.state, chunk.error, chunk.retrying = ChunkState.FAILED, event.error, False
            chunk.duration_ms = event.duration_ms or chunk.duration_ms
        elif kind is EventKind.RETRYING:
            chunk.error, chunk.retrying = event.error, True
        elif kind is EventKind.CANCELLED:
            chunk.state, chunk.retrying = ChunkState.CANCELLED, False
        if event.error and kind in (EventKind.RETRYING, EventKind.FAILED):
            chunk.log_tail = [*chunk.log_tail, f"attempt {event.attempt}: {event.error}"][-LOG_TAIL_LINES:]

    def heartbeat(self) -> None:
        """Write the record with a fresh heartbeat (the poller calls this every HEARTBEAT_S)."""
        with self.lock:
            self.status.heartbeat_at = utcnow()
            self.manager._save(self.status)

    def finish(self, report: JobReport) -> None:
        status = self.status
        with self.lock:
            for outcome in report.chunks:
                chunk = self.by_id.get(outcome.chunk_id)
                if chunk is not None:
                    chunk.state = outcome.state
                    chunk.attempts = max(chunk.attempts, outcome.attempts)
                    chunk.error = outcome.error
                    chunk.frames = outcome.frames or chunk.frames
                    chunk.duration_ms = outcome.duration_ms or chunk.duration_ms
                    chunk.output_file = outcome.output_file or chunk.output_file
                    chunk.retrying = False
            status.completed_chunks = sum(1 for c in status.chunks if c.state.done)
            status.done_frames = sum(c.frames for c in status.chunks if c.state.done)
            if report.cancelled:
                status.state = JobState.CANCELLED
                status.error = "cancelled"
            elif report.ok:
                status.state = JobState.COMPLETED
                status.progress = 100.0
                merge = report.merge
                if merge is not None and merge.output:
                    status.result = JobResultInfo(output=merge.output, frames=merge.frames, duration=merge.duration_s)
            else:
                status.state = JobState.FAILED
                failed = [c for c in report.chunks if c.state is ChunkState.FAILED]
                if failed:
                    status.error = failed[0].error
                elif report.merge is not None and report.merge.error:
                    status.error = f"merge failed: {report.merge.error}"
                else:
                    status.error = report.error or "failed"
            if status.state is not JobState.COMPLETED:
                total = max(status.total_chunks, 1)
                status.progress = round(min(99.0, 100.0 * status.completed_chunks / total), 1)
