"""Job repositories: the same contract in memory and in SQLite; SQLite shared by several processes."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest

from helios_kit.errors import JobNotFoundError, StoreError, UnknownNameError
from helios_kit.repository import (
    ChunkState,
    ChunkStatus,
    InMemoryJobRepository,
    JobRepository,
    JobState,
    JobStatus,
    SQLiteJobRepository,
    default_db_path,
    open_repository,
    utcnow,
)


@pytest.fixture(params=["memory", "sqlite"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> JobRepository:
    if request.param == "memory":
        return InMemoryJobRepository()
    return SQLiteJobRepository(tmp_path / "state" / "jobs.db")


def test_save_get_list_delete(repo: JobRepository) -> None:
    older = JobStatus(
        id="a",
        created_at=utcnow() - timedelta(minutes=5),
        total_chunks=2,
        chunks=[ChunkStatus(id=0), ChunkStatus(id=1)],
    )
    newer = JobStatus(id="b")
    repo.save(older)
    repo.save(newer)
    assert [job.id for job in repo.list()] == ["b", "a"]
    got = repo.get("a")
    assert got == older and got is not older
    older.state = JobState.RUNNING
    older.chunks[1].state = ChunkState.RENDERED
    older.chunks[1].attempts = 2
    repo.save(older)
    again = repo.get("a")
    assert again.state is JobState.RUNNING and again.chunks[1].attempts == 2
    assert again.created_at == older.created_at
    repo.delete("a")
    assert not repo.exists("a") and repo.exists("b")


def test_unknown_job_is_a_one_line_error(repo: JobRepository) -> None:
    for call in (repo.get, repo.delete, repo.set_cancel_requested):
        with pytest.raises(JobNotFoundError, match=r"^no job with id 'ghost' \(see `helios job list`\)$"):
            call("ghost")
    assert repo.cancel_requested("ghost") is False


def test_cancel_flag(repo: JobRepository) -> None:
    repo.save(JobStatus(id="x"))
    assert not repo.cancel_requested("x")
    repo.set_cancel_requested("x")
    assert repo.cancel_requested("x")
    repo.save(repo.get("x"))  # a progress write does not clear it
    assert repo.cancel_requested("x")
    repo.set_cancel_requested("x", False)
    assert not repo.cancel_requested("x")


def test_json_is_camel_case(tmp_path: Path) -> None:
    status = JobStatus(id="j", total_chunks=3, completed_chunks=1)
    data = status.model_dump(by_alias=True)
    assert {"totalChunks", "completedChunks", "createdAt", "updatedAt", "result", "progress"} <= data.keys()


def _writer(path: str, worker: int, count: int) -> None:
    repo = SQLiteJobRepository(path)
    for index in range(count):
        status = JobStatus(id=f"w{worker}-{index}", progress=float(index))
        repo.save(status)
        status.state = JobState.COMPLETED
        repo.save(status)
        repo.set_cancel_requested(status.id)
        assert repo.get(status.id).state is JobState.COMPLETED


def test_sqlite_is_safe_with_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    SQLiteJobRepository(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, worker, 40)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    jobs = SQLiteJobRepository(path).list()
    assert len(jobs) == 160 and all(job.state is JobState.COMPLETED for job in jobs)
    with __import__("sqlite3").connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_HOME", raising=False)
    project = tmp_path / "project"
    (project / ".helios").mkdir(parents=True)
    (project / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(project / "sub" / "dir")
    assert default_db_path() == project / ".helios" / "jobs.db"
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "jobs.db"
    assert SQLiteJobRepository().path == tmp_path / "home" / "jobs.db"


def test_unusable_database_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=r"job database .* is not usable"):
        SQLiteJobRepository(blocker / "jobs.db")


def test_repositories_come_from_plugins(tmp_path: Path) -> None:
    assert isinstance(open_repository("memory"), InMemoryJobRepository)
    assert isinstance(open_repository("sqlite", path=tmp_path / "j.db"), SQLiteJobRepository)
    with pytest.raises(UnknownNameError, match="unknown repository 'nope'; known: memory, sqlite"):
        open_repository("nope")
