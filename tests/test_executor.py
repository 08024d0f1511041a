"""Executor with scripted backends: retries with backoff, permanent failures, timeouts, cancel, concurrency."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from fakes.jobs import RuntimeBackend, make_job
from fakes.renders import decode_frame_indexes, frame_index_render
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.backends.base import Backend, ChunkContext, WorkerResult
from helios_kit.commands.job import parse_chunk_ids
from helios_kit.errors import SpecError
from helios_kit.protocol import EventKind, ProgressEvent
from helios_kit.repository import ChunkState
from helios_kit.run import RunOptions, execute_job
from helios_kit.spec import Chunk, JobSpec, load


class ScriptedBackend(Backend):
    """Fails, hangs or sleeps as told, then renders for real (frame-index video through WorkerRuntime)."""

    name = "scripted"
    backups_by_default = False  # in this process: the attempts are counted, not raced

    def __init__(
        self,
        workspace: Path,
        *,
        transient: dict[int, int] | None = None,
        permanent: set[int] = frozenset(),
        hang: set[int] = frozenset(),
        sleep: float = 0.0,
        gate: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.inner = RuntimeBackend(frame_index_render, workspace)
        self.transient = transient or {}
        self.permanent = permanent
        self.hang = hang
        self.sleep = sleep
        self.gate = gate  # when given, every attempt waits until it is set (or the chunk is cancelled)
        self.attempts: dict[int, int] = {}
        self.attempt_times: dict[int, list[float]] = {}
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.attempts[chunk.id] = self.attempts.get(chunk.id, 0) + 1
            self.attempt_times.setdefault(chunk.id, []).append(time.monotonic())
            attempt = self.attempts[chunk.id]
        try:
            if self.gate is not None:
                while not self.gate.wait(0.05):
                    if cancel.is_set():
                        return WorkerResult.cancelled(chunk.id, "stopped")
            if chunk.id in self.permanent:
                return WorkerResult.failed(chunk.id, "composition threw", retryable=False)
            if attempt <= self.transient.get(chunk.id, 0):
                return WorkerResult.failed(chunk.id, f"network blip {attempt}", retryable=True)
            if chunk.id in self.hang:
                cancel.wait(30)
                return WorkerResult.cancelled(chunk.id, "stopped")
            if self.sleep and cancel.wait(self.sleep):
                return WorkerResult.cancelled(chunk.id, "stopped")
            return self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)
        finally:
            with self.lock:
                self.active -= 1


def run(
    job: Path,
    backend: Backend,
    events: list[ProgressEvent] | None = None,
    cancel: threading.Event | None = None,
    **options,
):
    spec = load(job)
    sinks = [events.append] if events is not None else []
    return execute_job(spec, str(job), job.parent, backend, RunOptions(**options), cancel=cancel, sinks=sinks)


def test_success_merges_frame_exact_and_summarises(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=24, chunks=4)
    backend = ScriptedBackend(tmp_path / "ws")
    report = run(job, backend, concurrency=2)
    assert report.ok, report
    assert report.summary_line() == (
        f"4 chunks: 4 rendered, 0 skipped (complete), 0 failed; merged → {tmp_path / 'job' / 'out.mp4'} "
        "(24 frames, 0.800 s)"
    )
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", 160, 120) == list(range(24))


def test_transient_failures_are_retried_with_exponential_backoff(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    backend = ScriptedBackend(tmp_path / "ws", transient={1: 2})
    events: list[ProgressEvent] = []
    report = run(job, backend, events, retries=2, retry_delay=0.2, concurrency=3)
    assert report.ok, report.summary_line()
    outcome = {o.chunk_id: o for o in report.chunks}[1]
    assert outcome.state is ChunkState.RENDERED and outcome.attempts == 3
    retries = [e for e in events if e.kind is EventKind.RETRYING and e.chunk_id == 1]
    assert [e.attempt for e in retries] == [1, 2]
    assert retries[0].error == "network blip 1"
    # exponential with jitter in [0, retry_delay]: 0.2..0.4, then 0.4..0.6
    assert 0.2 <= retries[0].delay_s <= 0.4 + 1e-6 and 0.4 <= retries[1].delay_s <= 0.6 + 1e-6
    times = backend.attempt_times[1]
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4
    assert backend.attempts == {0: 1, 1: 3, 2: 1}


def test_failure_after_retries_fails_the_job_naming_the_chunk_and_keeps_other_work(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    backend = ScriptedBackend(tmp_path / "ws", transient={2: 10})
    events: list[ProgressEvent] = []
    report = run(job, backend, events, retries=1, retry_delay=0.01)
    assert not report.ok
    failed = [o for o in report.chunks if o.state is ChunkState.FAILED]
    assert [o.chunk_id for o in failed] == [2]
    assert failed[0].error == "chunk 2 failed after 2 attempts: network blip 2"
    assert report.merge is None and not (tmp_path / "job" / "out.mp4").exists()
    assert report.error is None  # the skipped merge is not reported as a second error
    assert "3 chunks: 2 rendered, 0 skipped (complete), 1 failed; not merged" in report.summary_line()
    assert any(e.kind is EventKind.FAILED and e.chunk_id == 2 for e in events)
    # the other chunks' work is kept: the next run renders only chunk 2
    again = run(job, ScriptedBackend(tmp_path / "ws"), retries=0)
    assert again.ok and (again.rendered, again.skipped) == (1, 2)


def test_permanent_failure_is_not_retried(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    backend = ScriptedBackend(tmp_path / "ws", permanent={0})
    report = run(job, backend, retries=5, retry_delay=0.01)
    assert backend.attempts[0] == 1
    assert not report.ok and report.failed == 1
    assert report.chunks[0].error == "chunk 0 failed after 1 attempt: composition threw"


def test_chunk_timeout_stops_the_attempt_and_is_retried(tmp_path: Path) -> None:
    # One chunk, and it hangs: a chunk that renders for real could itself outlast so short a timeout on a
    # loaded machine, so none does here (the others-carry-on case is the permanent-failure test's).
    job = make_job(tmp_path / "job", frames=8, chunks=1)
    backend = ScriptedBackend(tmp_path / "ws", hang={0})
    report = run(job, backend, retries=1, retry_delay=0.01, chunk_timeout=0.3)  # a hang never returns by itself
    assert backend.attempts[0] == 2
    assert report.chunks[0].state is ChunkState.FAILED
    assert report.chunks[0].error == "chunk 0 failed after 2 attempts: timed out after 0.3 s"
    assert report.merge is None and not report.ok


def test_cancel_mid_run_stops_scheduling_and_aborts_running_chunks(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=32, chunks=8)
    backend = ScriptedBackend(tmp_path / "ws", sleep=0.4)
    cancel = threading.Event()
    events: list[ProgressEvent] = []

    def sink(event: ProgressEvent) -> None:
        events.append(event)
        if event.kind is EventKind.RENDERED:
            cancel.set()

    report = execute_job(
        load(job), str(job), job.parent, backend, RunOptions(concurrency=2), cancel=cancel, sinks=[sink]
    )
    assert report.cancelled and not report.ok
    assert 1 <= report.rendered < 8
    assert report.count(ChunkState.CANCELLED) == 8 - report.rendered
    assert sum(backend.attempts.values()) <= report.rendered + 2  # nothing new started after the cancel
    assert report.merge is None and "job cancelled" in report.summary_line()


def test_concurrency_is_never_exceeded(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=24, chunks=12)
    backend = ScriptedBackend(tmp_path / "ws", sleep=0.3)  # long enough for 3 to overlap on a loaded machine
    report = run(job, backend, concurrency=3)
    assert report.ok
    assert backend.max_active == 3


def test_only_selected_chunks_then_merge_when_all_complete(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=16, chunks=4)
    first = run(job, ScriptedBackend(tmp_path / "ws"), chunks=[0, 2])
    assert first.ok and first.total_chunks == 2 and first.rendered == 2
    assert first.merge is not None and first.merge.pending == "chunks 1,3 not complete"
    second = run(job, ScriptedBackend(tmp_path / "ws"), chunks=[1, 3])
    assert second.ok and second.merge is not None and second.merge.frames == 16
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", 160, 120) == list(range(16))


def test_unknown_chunk_id_is_a_clear_error(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    with pytest.raises(SpecError, match=r"unknown chunk id 7: job job-1 has ids 0-1"):
        run(job, ScriptedBackend(tmp_path / "ws"), chunks=[7])


@given(st.sets(st.integers(min_value=0, max_value=200), min_size=1))
def test_chunk_id_lists_round_trip(ids: set[int]) -> None:
    ordered = sorted(ids)
    parts, start = [], None
    for index, value in enumerate(ordered):
        if start is None:
            start = value
        if index + 1 == len(ordered) or ordered[index + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    assert parse_chunk_ids(",".join(parts)) == ordered


@pytest.mark.parametrize("text", ["a", "3-1", "-2", "1,,x", ""])
def test_bad_chunk_lists_name_the_bad_part(text: str) -> None:
    with pytest.raises(SpecError, match="--chunks"):
        parse_chunk_ids(text)


def test_rich_progress_counts_chunks_and_frames(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from helios_kit.commands.progress import RichProgress

    spec = load(make_job(tmp_path / "job", frames=12, chunks=3))
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    progress = RichProgress(spec, console=console)
    with progress:
        progress(ProgressEvent(kind=EventKind.SKIPPED, chunk_id=0, frames=4))
        progress(ProgressEvent(kind=EventKind.RENDERED, chunk_id=1, frames=4, duration_ms=10))
        progress(ProgressEvent(kind=EventKind.RETRYING, chunk_id=2, error="blip", delay_s=1.5))
    (frames,) = progress.progress.tasks  # one bar over all frames, chunks done in its description
    assert (frames.completed, frames.total) == (8, 12) and "2/3 chunks" in frames.description
    assert progress.rendered_frames == 4 and "frames/s" in frames.fields["rate"]
    assert "chunk 2: retrying: blip (next try in 1.5 s)" in console.file.getvalue()


def test_no_merge_renders_chunks_only(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    report = run(job, ScriptedBackend(tmp_path / "ws"), merge=False)
    assert report.ok and report.rendered == 2 and report.merge is None
    assert report.summary_line().endswith("; not merged (--no-merge)")
    assert not (tmp_path / "job" / "out.mp4").exists()


class CommitsThenLosesTheAnswer(Backend):
    """Each chunk's first attempt renders and commits, then fails in a retryable way (its answer lost, a
    timeout just after the commit); later attempts go to the worker, which finds the chunk complete."""

    name = "lossy"
    backups_by_default = False  # in this process: the attempts are counted, not raced

    def __init__(self, workspace: Path) -> None:
        super().__init__()
        self.inner = RuntimeBackend(frame_index_render, workspace)
        self.results: list[WorkerResult] = []
        self.lock = threading.Lock()

    def run_chunk(self, spec, chunk, context, *, cancel, timeout=None) -> WorkerResult:
        result = self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)
        with self.lock:
            self.results.append(result)
            first = sum(1 for r in self.results if r.chunk_id == chunk.id) == 1
        if first:
            return WorkerResult.failed(chunk.id, "connection reset after the commit", retryable=True)
        return result


def test_a_chunk_this_run_rendered_counts_as_rendered_after_a_retry(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    backend = CommitsThenLosesTheAnswer(tmp_path / "ws")
    events: list[ProgressEvent] = []
    report = run(job, backend, events, retries=1, retry_delay=0.01)
    # the retries met what the first attempts had committed: the worker said `skipped` every time
    assert [r.status for r in backend.results].count("skipped") == 3
    assert report.ok and (report.rendered, report.skipped) == (3, 0), report.summary_line()
    assert report.summary_line().startswith("3 chunks: 3 rendered, 0 skipped (complete), 0 failed; merged")
    assert all(o.state is ChunkState.RENDERED and o.attempts == 2 for o in report.chunks)
    assert sorted(e.chunk_id for e in events if e.kind is EventKind.RENDERED) == [0, 1, 2]
    assert not [e for e in events if e.kind is EventKind.SKIPPED]
    # and the next run, which renders nothing, says so
    again = run(job, CommitsThenLosesTheAnswer(tmp_path / "ws"))
    assert (again.rendered, again.skipped) == (0, 3)


class AnotherRunnerWasFaster(Backend):
    """Another runner commits the chunk just before this run's worker looks: the worker skips it."""

    name = "raced"
    backups_by_default = False  # in this process: the attempts are counted, not raced

    def __init__(self, workspace: Path) -> None:
        super().__init__()
        self.inner = RuntimeBackend(frame_index_render, workspace)

    def run_chunk(self, spec, chunk, context, *, cancel, timeout=None) -> WorkerResult:
        self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)  # the other runner
        return self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)


def test_a_workers_skip_counts_as_skipped_when_this_run_rendered_nothing_for_it(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    report = run(job, AnotherRunnerWasFaster(tmp_path / "ws"))
    assert report.ok and (report.rendered, report.skipped) == (0, 2), report.summary_line()


class FailingBackup(Backend):
    """Chunk 3's first attempt straggles until its backup has failed (and said so); every other attempt renders."""

    name = "scripted-backups"

    def __init__(self, workspace: Path, said: threading.Event) -> None:
        super().__init__()
        self.inner = RuntimeBackend(frame_index_render, workspace)
        self.said = said
        self.attempts: dict[int, int] = {}
        self.lock = threading.Lock()

    def run_chunk(self, spec: JobSpec, chunk: Chunk, context: ChunkContext, *, cancel, timeout=None) -> WorkerResult:
        with self.lock:
            self.attempts[chunk.id] = attempt = self.attempts.get(chunk.id, 0) + 1
        if chunk.id == 3 and attempt == 2:  # the straggler's backup
            return WorkerResult.failed(chunk.id, "backup blip", retryable=True)
        if chunk.id == 3:
            self.said.wait(120)  # a safety net only: the line comes as soon as the backup has failed
        return self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)


def test_a_failed_backup_attempt_prints_its_own_line_and_is_counted(tmp_path: Path, caplog) -> None:
    from helios_kit.stragglers import BackupPolicy

    said = threading.Event()

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "backup attempt failed" in record.getMessage():
                said.set()

    handler = Said()
    logging.getLogger("helios.stragglers").addHandler(handler)
    try:
        job = make_job(tmp_path / "job", frames=16, chunks=4)
        backend = FailingBackup(tmp_path / "ws", said)
        policy = BackupPolicy(enabled=True, after=0.5, factor=1.5, poll_s=0.05)
        with caplog.at_level(logging.WARNING, logger="helios.stragglers"):
            report = run(job, backend, concurrency=4, retries=2, backups=policy)
    finally:
        logging.getLogger("helios.stragglers").removeHandler(handler)
    assert report.ok, report.summary_line()
    assert backend.attempts[3] == 2 and said.is_set()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = "chunk 3: straggler backup attempt failed (backup blip); not a retry: the chunk's own attempt goes on"
    assert lines == [expected]
    assert report.backups_failed == 1
    assert report.summary_line().endswith("; 0 retries, 0 throttled, 1 failed backup attempt"), report.summary_line()


def test_backups_default_to_what_the_backend_says() -> None:
    """Unset, straggler backups follow `Backend.backups_by_default`: off for the local backend (a second attempt
    would share its cores), on for the remote ones and for a third party's backend that does not say."""
    from helios_lambda.backend import LambdaBackend

    from helios_kit.backends.local import LocalBackend
    from helios_kit.stragglers import BackupPolicy

    class ThirdParty(Backend):
        name = "third-party"

        def run_chunk(self, spec, chunk, context, *, cancel, timeout=None):  # pragma: no cover - not run
            raise AssertionError

    unset = BackupPolicy()
    assert not unset.active_for(LocalBackend.backups_by_default)
    assert unset.active_for(LambdaBackend.backups_by_default) and unset.active_for(ThirdParty.backups_by_default)
    assert BackupPolicy(enabled=True).active_for(LocalBackend.backups_by_default)
    assert not BackupPolicy(enabled=False).active_for(LambdaBackend.backups_by_default)
