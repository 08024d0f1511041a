"""JobManager: background submit, state transitions, cancel (here and through the repository), repository
write failures, unknown jobs, and the local backend end to end (worker processes, stand-in render)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fakes.jobs import make_job, wait_no_tagged_processes
from fakes.renders import decode_frame_indexes
from test_executor import ScriptedBackend

from helios_kit.errors import JobNotFoundError, StoreError
from helios_kit.manager import JobManager
from helios_kit.repository import ChunkState, InMemoryJobRepository, JobState, JobStatus, SQLiteJobRepository
from helios_kit.run import RunOptions

TESTS = Path(__file__).parent


def poll(manager: JobManager, job_id: str, until: set[JobState], timeout: float = 30) -> tuple[JobStatus, list]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manager.get(job_id)
        if not seen or seen[-1] is not status.state:
            seen.append(status.state)
        if status.state in until:
            return status, seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout} s")


def test_submit_returns_at_once_and_runs_in_the_background(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=16, chunks=4)
    manager = JobManager(InMemoryJobRepository())
    gate = threading.Event()  # no chunk can finish before the test opens it: submit must return first
    job_id = manager.submit(job, backend=ScriptedBackend(tmp_path / "ws", gate=gate), options=RunOptions(concurrency=2))
    assert job_id == "job-1"
    first = manager.get(job_id)
    assert first.state in (JobState.PENDING, JobState.RUNNING) and first.total_chunks == 4
    gate.set()
    status, seen = poll(manager, job_id, {JobState.COMPLETED, JobState.FAILED})
    assert status.state is JobState.COMPLETED, status.error
    assert JobState.RUNNING in seen and seen[-1] is JobState.COMPLETED
    assert status.progress == 100 and status.completed_chunks == 4 and status.error is None
    assert status.result is not None and status.result.frames == 16 and status.result.duration == pytest.approx(16 / 30)
    assert status.result.output == str(tmp_path / "job" / "out.mp4")
    assert [(c.state, c.attempts) for c in status.chunks] == [(ChunkState.RENDERED, 1)] * 4
    assert status.updated_at >= status.created_at


def test_failed_job_records_the_chunk_and_its_error(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    manager = JobManager()
    status = manager.create(
        job, backend=ScriptedBackend(tmp_path / "ws", transient={1: 9}), options=RunOptions(retries=1, retry_delay=0.01)
    )
    assert status.state is JobState.PENDING
    final = manager.run(status.id)
    assert final.state is JobState.FAILED
    assert final.error == "chunk 1 failed after 2 attempts: network blip 2"
    chunk = {c.id: c for c in manager.get(status.id).chunks}[1]
    assert chunk.state is ChunkState.FAILED and chunk.attempts == 2
    assert final.completed_chunks == 2 and final.progress < 100 and final.result is None


def test_cancel_here_and_from_another_process_through_the_repository(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    for via_repository in (False, True):
        job = make_job(tmp_path / f"job{via_repository}", frames=40, chunks=10, job_id=f"slow-{via_repository}")
        manager = JobManager(SQLiteJobRepository(db), poll_interval=0.1)
        job_id = manager.submit(
            job, backend=ScriptedBackend(tmp_path / "ws", sleep=0.5), options=RunOptions(concurrency=1)
        )
        poll(manager, job_id, {JobState.RUNNING})
        if via_repository:  # what `helios job cancel` does from another terminal
            JobManager(SQLiteJobRepository(db)).cancel(job_id)
        else:
            manager.cancel(job_id)
        status, _ = poll(manager, job_id, {JobState.CANCELLED, JobState.COMPLETED, JobState.FAILED}, timeout=60)
        assert status.state is JobState.CANCELLED
        assert status.completed_chunks < 10
        assert any(c.state is ChunkState.CANCELLED for c in status.chunks)


class FlakyRepository(InMemoryJobRepository):
    """Every save after the first fails, as a full disk or a locked database would."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, status: JobStatus) -> None:
        self.saves += 1
        if self.saves > 1:
            raise StoreError("job database jobs.db: disk I/O error")
        super().save(status)


def test_repository_write_failure_does_not_break_the_job_and_is_reported(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    repository = FlakyRepository()
    manager = JobManager(repository)
    status = manager.create(job, backend=ScriptedBackend(tmp_path / "ws"))
    final = manager.run(status.id)
    assert final.state is JobState.COMPLETED
    assert final.warnings == ["job record not saved: StoreError: job database jobs.db: disk I/O error"]
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", 160, 120) == list(range(12))
    assert repository.saves > 2
    assert manager.get(status.id).state is JobState.PENDING  # the last record that could be written


def test_unknown_job(tmp_path: Path) -> None:
    manager = JobManager(SQLiteJobRepository(tmp_path / "jobs.db"))
    for call in (manager.get, manager.cancel, manager.delete):
        with pytest.raises(JobNotFoundError, match="no job with id 'nope'"):
            call("nope")


def test_delete_and_list(tmp_path: Path) -> None:
    manager = JobManager()
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    status = manager.create(job, backend=ScriptedBackend(tmp_path / "ws"))
    manager.run(status.id)
    assert [j.id for j in manager.list()] == ["job-1"]
    manager.delete("job-1")
    assert manager.list() == []


def test_local_backend_through_the_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = f"helios-manager-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("HELIOS_TEST_PROCESS_TAG", tag)
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.renders:frame_index_render")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    job = make_job(tmp_path / "job", frames=20, chunks=4)
    manager = JobManager(SQLiteJobRepository(tmp_path / "jobs.db"))
    job_id = manager.submit(job, backend="local", options=RunOptions(concurrency=2))
    status, _ = poll(manager, job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=60)
    assert status.state is JobState.COMPLETED, status.error
    assert status.backend == "local" and status.result is not None and status.result.frames == 20
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", 160, 120) == list(range(20))
    assert wait_no_tagged_processes(tag, timeout=60) == []


def test_create_from_a_spec_object(tmp_path: Path) -> None:
    from helios_kit.spec import load

    job = make_job(tmp_path / "job", frames=8, chunks=2)
    spec = load(job)
    job.unlink()  # only the object remains
    manager = JobManager()
    status = manager.create(spec, job_dir=tmp_path / "job", backend=ScriptedBackend(tmp_path / "ws"))
    assert Path(status.job_url).is_file()
    final = manager.run(status.id)
    assert final.state is JobState.COMPLETED, final.error
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", 160, 120) == list(range(8))


def test_cancel_of_a_job_whose_process_is_gone_records_cancelled(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    repository = SQLiteJobRepository(tmp_path / "jobs.db")
    repository.save(JobStatus(id="orphan", state=JobState.RUNNING, pid=int(gone.stdout)))
    status = JobManager(repository).cancel("orphan")
    assert status.state is JobState.CANCELLED
    assert repository.get("orphan").state is JobState.CANCELLED
    assert JobManager(repository).cancel("orphan").state is JobState.CANCELLED  # finished jobs stay as they are
