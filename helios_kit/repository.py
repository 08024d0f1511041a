"""Run records: the JobStatus model (one run of a job) and where it is kept (SQLite by default, in memory
for tests, plugins through the `register_repositories` hook).

Every `helios job run` is a run with its own ``run_id`` under its job (``id`` is the job's id). A repository
stores one :class:`JobStatus` per run plus a cancel flag another process can raise (`helios job cancel` from
another terminal); the running job polls it. Lookups take a run id or a job id (that job's latest run). The
SQLite repository is safe with several processes at once: WAL journal, a busy timeout, one short
transaction per call, a fresh connection per thread; a database of the old layout (table ``jobs``, one row
per job id) is migrated on open into the ``runs`` table (the old table is kept as ``jobs_v1``).
"""

from __future__ import annotations

import copy
import os
import socket
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from helios_kit.errors import JobNotFoundError, StoreError
from helios_kit.protocol import ChunkState

HOME_ENV_VAR = "HELIOS_HOME"
PROJECT_STATE_DIR = ".helios"
DB_NAME = "jobs.db"


#: `--repository` default; also read from this environment variable.
REPOSITORY_ENV_VAR = "HELIOS_REPOSITORY"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    """A run's id: unique without coordination (`run-` and 12 hex digits)."""
    return f"run-{uuid.uuid4().hex[:12]}"


def this_host() -> str:
    return socket.gethostname()


class StatusModel(BaseModel):
    """camelCase JSON (as the seed's JobStatus), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Its owner (pid on host) is gone or its heartbeat stopped: derived on read, never written by a runner.
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """Ended by its owner (an interrupted run may still be cancelled, which records it as ended)."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    @property
    def active(self) -> bool:
        return self in (JobState.PENDING, JobState.RUNNING)


class ChunkStatus(StatusModel):
    id: int
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    retrying: bool = Field(False, description="A retryable failure happened; the next attempt waits or runs.")
    worker: str | None = Field(None, description="Who runs (ran) it: the backend and host, or a worker's name.")
    started_at: datetime | None = None
    output_file: str | None = Field(None, description="Where its output is, as the worker reported it.")
    log_tail: list[str] = Field(default_factory=list, description="The last lines said about its attempts.")


class JobResultInfo(StatusModel):
    output: str
    frames: int
    duration: float = Field(description="Seconds of video.")


class JobStatus(StatusModel):
    """One run of a job (what `helios job status` shows): state, progress, per-chunk state, times, owner."""

    id: str = Field(description="The job's id (JobSpec.jobId); several runs share it.")
    run_id: str = Field(default_factory=new_run_id)
    state: JobState = JobState.PENDING
    progress: float = Field(0.0, ge=0, le=100)
    total_chunks: int = 0
    completed_chunks: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    result: JobResultInfo | None = None
    chunks: list[ChunkStatus] = Field(default_factory=list)
    job_url: str = ""
    backend: str = "local"
    pid: int | None = None
    output: str = ""
    warnings: list[str] = Field(default_factory=list, description="Problems that did not stop the job.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    host: str | None = Field(None, description="The owner's host name (with pid: who runs it).")
    heartbeat_at: datetime | None = Field(None, description="Last sign of life of the owner.")
    store: str | None = Field(None, description="The artifact store of its chunk outputs.")
    total_frames: int = 0
    done_frames: int = Field(0, description="Frames of chunks done (rendered or found complete).")
    rendered_frames: int = Field(0, description="Frames this run rendered (for frames/s).")
    cost_usd: float | None = Field(None, description="Cost so far, when a backend knows it.")


#: A run is the record; `JobStatus` is its historical name.
RunRecord = JobStatus


class JobRepository(ABC):
    """Where run records live. Implementations must be safe to call from several threads.

    A `key` is a run id, or a job id standing for that job's latest run (by `created_at`).
    """

    @abstractmethod
    def save(self, status: JobStatus) -> None:
        """Insert or replace the record of run `status.run_id` (the cancel flag is separate: kept)."""

    @abstractmethod
    def get(self, key: str) -> JobStatus:
        """The run `key`, or JobNotFoundError."""

    @abstractmethod
    def list(self) -> list[JobStatus]:
        """All runs, newest first."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a run, or every run of a job id; JobNotFoundError when there is none."""

    @abstractmethod
    def set_cancel_requested(self, key: str, value: bool = True) -> None:
        """Raise (or clear) the cancel flag the running run polls; JobNotFoundError when unknown."""

    @abstractmethod
    def cancel_requested(self, key: str) -> bool:
        """Whether someone asked run `key` to stop."""

    def runs(self, job_id: str) -> list[JobStatus]:
        """The runs of one job, newest first."""
        return [run for run in self.list() if run.id == job_id]

    def recent(self, limit: int) -> list[JobStatus]:
        """The newest `limit` runs, newest first (a repository may read only those)."""
        return self.list()[:limit]

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except JobNotFoundError:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def _not_found(key: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job with id {key!r} (see `helios job list`)")


class InMemoryJobRepository(JobRepository):
    """Records in a dict (tests, embedding); copies in and out so callers never share objects."""

    def __init__(self) -> None:
        self._runs: dict[str, JobStatus] = {}
        self._cancel: set[str] = set()
        self._lock = threading.Lock()

    def _resolve(self, key: str) -> str | None:
        if key in self._runs:
            return key
        runs = [run for run in reversed(self._runs.values()) if run.id == key]  # ties: the later saved
        return max(runs, key=lambda run: run.created_at).run_id if runs else None

    def save(self, status: JobStatus) -> None:
        with self._lock:
            self._runs[status.run_id] = status.model_copy(deep=True)

    def get(self, key: str) -> JobStatus:
        with self._lock:
            run_id = self._resolve(key)
            if run_id is None:
                raise _not_found(key)
            return copy.deepcopy(self._runs[run_id])

    def list(self) -> list[JobStatus]:
        with self._lock:
            runs = [run.model_copy(deep=True) for run in reversed(self._runs.values())]  # ties: the later saved
        return sorted(runs, key=lambda run: run.created_at, reverse=True)

    def delete(self, key: str) -> None:
        with self._lock:
            doomed = [key] if key in self._runs else [r.run_id for r in self._runs.values() if r.id == key]
            if not doomed:
                raise _not_found(key)
            for run_id in doomed:
                del self._runs[run_id]
                self._cancel.discard(run_id)

    def set_cancel_requested(self, key: str, value: bool = True) -> None:
        with self._lock:
            run_id = self._resolve(key)
            if run_id is None:
                raise _not_found(key)
            (self._cancel.add if value else self._cancel.discard)(run_id)

    def cancel_requested(self, key: str) -> bool:
        with self._lock:
            return self._resolve(key) in self._cancel


def default_db_path(start: Path | None = None) -> Path:
    """`$HELIOS_HOME/jobs.db`, else `.helios/jobs.db` of the nearest folder (from cwd up) that has `.helios/`,
    else `./.helios/jobs.db`."""
    home = os.environ.get(HOME_ENV_VAR)
    if home:
        return Path(home).expanduser() / DB_NAME
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_STATE_DIR).is_dir():
            return folder / PROJECT_STATE_DIR / DB_NAME
    return here / PROJECT_STATE_DIR / DB_NAME


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, created_at);
"""

#: The first layout: one row per job id, each run overwriting the last.
_OLD_TABLE, _OLD_TABLE_KEPT = "jobs", "jobs_v1"


class SQLiteJobRepository(JobRepository):
    """Records in one SQLite file; several processes may read and write at once (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            db.executescript(_SCHEMA)
            self._migrate(db)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"job database {self.path} is not usable: {error}") from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Copy the old layout's records into `runs` (each becomes one run) and keep the old table aside."""

        def old_table_exists() -> bool:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return bool(db.execute(query, (_OLD_TABLE,)).fetchall())

        if not old_table_exists():
            return
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others find the old table gone
        try:
            if old_table_exists():
                for job_id, data, created_at, cancel in db.execute(
                    f"SELECT id, data, created_at, cancel_requested FROM {_OLD_TABLE}"
                ).fetchall():
                    status = _legacy_record(job_id, data)
                    db.execute(
                        "INSERT OR IGNORE INTO runs (run_id, job_id, data, created_at, cancel_requested) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (status.run_id, job_id, status.model_dump_json(by_alias=True), created_at, cancel),
                    )
                db.execute(f"ALTER TABLE {_OLD_TABLE} RENAME TO {_OLD_TABLE_KEPT}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            self._local.pid = os.getpid()
        return db

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            db = self._connect()
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"job database {self.path}: {error}") from None

    def _resolve(self, key: str) -> str | None:
        rows = self._execute(
            "SELECT run_id FROM runs WHERE run_id = ? UNION ALL "
            "SELECT * FROM (SELECT run_id FROM runs WHERE job_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1)",
            (key, key),
        )
        return rows[0][0] if rows else None

    def save(self, status: JobStatus) -> None:
        self._execute(
            "INSERT INTO runs (run_id, job_id, data, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET data = excluded.data",
            (status.run_id, status.id, status.model_dump_json(by_alias=True), status.created_at.isoformat()),
        )

    def get(self, key: str) -> JobStatus:
        run_id = self._resolve(key)
        rows = self._execute("SELECT data FROM runs WHERE run_id = ?", (run_id,)) if run_id else []
        if not rows:
            raise _not_found(key)
        return JobStatus.model_validate_json(rows[0][0])

    def list(self) -> list[JobStatus]:
        rows = self._execute("SELECT data FROM runs ORDER BY created_at DESC, rowid DESC")
        return [JobStatus.model_validate_json(row[0]) for row in rows]

    def recent(self, limit: int) -> list[JobStatus]:
        rows = self._execute("SELECT data FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
        return [JobStatus.model_validate_json(row[0]) for row in rows]

    def runs(self, job_id: str) -> list[JobStatus]:
        rows = self._execute("SELECT data FROM runs WHERE job_id = ? ORDER BY created_at DESC, rowid DESC", (job_id,))
        return [JobStatus.model_validate_json(row[0]) for row in rows]

    def delete(self, key: str) -> None:
        self.get(key)
        self._execute("DELETE FROM runs WHERE run_id = ? OR job_id = ?", (key, key))

    def set_cancel_requested(self, key: str, value: bool = True) -> None:
        run_id = self._resolve(key)
        if run_id is None:
            raise _not_found(key)
        self._execute("UPDATE runs SET cancel_requested = ? WHERE run_id = ?", (int(value), run_id))

    def cancel_requested(self, key: str) -> bool:
        run_id = self._resolve(key)
        rows = self._execute("SELECT cancel_requested FROM runs WHERE run_id = ?", (run_id,)) if run_id else []
        return bool(rows and rows[0][0])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _legacy_record(job_id: str, data: str) -> JobStatus:
    """A record of the old layout as a run (its JSON had no run id); unreadable JSON keeps the job id only."""
    try:
        status = JobStatus.model_validate_json(data)
    except ValueError:
        status = JobStatus(id=job_id, warnings=["migrated from an unreadable record of the old layout"])
    status.id = job_id
    return status


def open_repository(name: str | None = None, **kwargs: object) -> JobRepository:
    """The repository registered under `name` (default: `$HELIOS_REPOSITORY`, else sqlite); `NAME:LOCATION`
    passes LOCATION to its factory (`sqlite:/tmp/jobs.db`). UnknownNameError lists the known names."""
    from helios_kit.plugins import get_plugins

    name = name or os.environ.get(REPOSITORY_ENV_VAR) or "sqlite"
    name, colon, location = name.partition(":")
    factory = get_plugins().repository(name)
    return factory(location, **kwargs) if colon else factory(**kwargs)
