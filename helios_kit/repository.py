"""Job records: the JobStatus model and where it is kept (SQLite by default, in memory for tests).

A repository stores one :class:`JobStatus` per job id plus a cancel flag that another process can raise
(`helios job cancel` from another terminal); the running job polls it. The SQLite repository is safe with
several processes at once: WAL journal, a busy timeout, one short transaction per call, a fresh connection
per thread. Other repositories come from plugins through the `register_repositories` hook.
"""

from __future__ import annotations

import copy
import os
import sqlite3
import threading
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


def utcnow() -> datetime:
    return datetime.now(UTC)


class StatusModel(BaseModel):
    """camelCase JSON (as the seed's JobStatus), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class ChunkStatus(StatusModel):
    id: int
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None


class JobResultInfo(StatusModel):
    output: str
    frames: int
    duration: float = Field(description="Seconds of video.")


class JobStatus(StatusModel):
    """What `helios job status` shows; the seed's fields plus per-chunk state and attempts."""

    id: str
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


class JobRepository(ABC):
    """Where job records live. Implementations must be safe to call from several threads."""

    @abstractmethod
    def save(self, status: JobStatus) -> None:
        """Insert or replace the record of `status.id` (also clears nothing: the cancel flag is separate)."""

    @abstractmethod
    def get(self, job_id: str) -> JobStatus:
        """The record of `job_id`, or JobNotFoundError."""

    @abstractmethod
    def list(self) -> list[JobStatus]:
        """All records, newest first."""

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove a record; JobNotFoundError when there is none."""

    @abstractmethod
    def set_cancel_requested(self, job_id: str, value: bool = True) -> None:
        """Raise (or clear) the cancel flag the running job polls; JobNotFoundError when unknown."""

    @abstractmethod
    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked `job_id` to stop."""

    def exists(self, job_id: str) -> bool:
        try:
            self.get(job_id)
        except JobNotFoundError:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def _not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job with id {job_id!r} (see `helios job list`)")


class InMemoryJobRepository(JobRepository):
    """Records in a dict (tests, embedding); copies in and out so callers never share objects."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobStatus] = {}
        self._cancel: set[str] = set()
        self._lock = threading.Lock()

    def save(self, status: JobStatus) -> None:
        with self._lock:
            self._jobs[status.id] = status.model_copy(deep=True)

    def get(self, job_id: str) -> JobStatus:
        with self._lock:
            if job_id not in self._jobs:
                raise _not_found(job_id)
            return copy.deepcopy(self._jobs[job_id])

    def list(self) -> list[JobStatus]:
        with self._lock:
            jobs = [job.model_copy(deep=True) for job in self._jobs.values()]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)

    def delete(self, job_id: str) -> None:
        with self._lock:
            if self._jobs.pop(job_id, None) is None:
                raise _not_found(job_id)
            self._cancel.discard(job_id)

    def set_cancel_requested(self, job_id: str, value: bool = True) -> None:
        with self._lock:
            if job_id not in self._jobs:
                raise _not_found(job_id)
            (self._cancel.add if value else self._cancel.discard)(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel


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
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
)
"""


class SQLiteJobRepository(JobRepository):
    """Records in one SQLite file; several processes may read and write at once (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"job database {self.path} is not usable: {error}") from None

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

    def save(self, status: JobStatus) -> None:
        self._execute(
            "INSERT INTO jobs (id, data, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
            (status.id, status.model_dump_json(by_alias=True), status.created_at.isoformat()),
        )

    def get(self, job_id: str) -> JobStatus:
        rows = self._execute("SELECT data FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise _not_found(job_id)
        return JobStatus.model_validate_json(rows[0][0])

    def list(self) -> list[JobStatus]:
        rows = self._execute("SELECT data FROM jobs ORDER BY created_at DESC")
        return [JobStatus.model_validate_json(row[0]) for row in rows]

    def delete(self, job_id: str) -> None:
        self.get(job_id)
        self._execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def set_cancel_requested(self, job_id: str, value: bool = True) -> None:
        self.get(job_id)
        self._execute("UPDATE jobs SET cancel_requested = ? WHERE id = ?", (int(value), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0][0])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def open_repository(name: str = "sqlite", **kwargs: object) -> JobRepository:
    """The repository registered under `name` (UnknownNameError lists the known names)."""
    from helios_kit.plugins import get_plugins

    factory = get_plugins().repository(name)
    return factory(**kwargs)
