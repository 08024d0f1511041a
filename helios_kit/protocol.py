"""Wire models: the data that crosses a process or network boundary between a client, its backends and
the workers. These are contracts: change a field only with a reason, and keep reading what older workers send.

* :class:`WorkerRequest` — what a stateless worker receives: `{"jobUrl", "chunkId", "store", "force"}`.
* :class:`WorkerResult` — what running one chunk produced, with a :class:`WorkerStatus` (`ok`, `skipped`,
  `failed`, `cancelled`, `timed_out`) and `retryable` as data: whether another attempt may succeed.
* :class:`ProgressEvent` — one thing that happened to a chunk or the merge during a run (progress bars, the
  job records and the dashboard read these).
* :class:`FrameProgress` — a worker's frames done so far in one chunk (a local worker's
  `HELIOS-WORKER-FRAMES` stdout line, a remote worker's `<output>.progress.json` heartbeat in the store).

JSON keys are camelCase, Python names snake_case. This module knows nothing of jobs, stores or browsers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from helios_kit.errors import describe


class WireModel(BaseModel):
    """camelCase on the wire (JSON payloads between clients and workers), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class WorkerRequest(WireModel):
    """The payload a stateless worker receives: `{"jobUrl": ..., "chunkId": ..., "store": ...}`."""

    job_url: str
    chunk_id: int
    store: str | None = None
    force: bool = False
    #: Keep the chunk's seam images (`helios job run --verify-seams`; see helios_kit.seams).
    verify_seams: bool = False
    #: Merge the job's complete chunks next to the store instead of rendering `chunk_id` (then ignored).
    merge: bool = False

    def run_flags(self) -> dict[str, bool]:
        """Keyword flags for `WorkerRuntime.run` beyond the positional four (only those set, so runtimes
        written before a flag existed keep working)."""
        return {"verify_seams": True} if self.verify_seams else {}


class WorkerStatus(StrEnum):
    """How an attempt at a chunk ended."""

    OK = "ok"  # rendered and committed
    SKIPPED = "skipped"  # the store already held the chunk complete: nothing rendered
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped because someone asked (the job's cancel, a caller that went away)
    TIMED_OUT = "timed_out"  # stopped because its time ran out (the chunk timeout, a platform's limit)

    @property
    def ok(self) -> bool:
        return self in (WorkerStatus.OK, WorkerStatus.SKIPPED)


#: `exitCode` of results written before `status` existed (helios-kit up to 0.x workers still deployed).
_LEGACY_EXIT_CODES = {0: WorkerStatus.OK, 124: WorkerStatus.TIMED_OUT, 130: WorkerStatus.CANCELLED}


_EXIT_CODES = {WorkerStatus.OK: 0, WorkerStatus.SKIPPED: 0, WorkerStatus.TIMED_OUT: 124, WorkerStatus.CANCELLED: 130}


class WorkerResult(WireModel):
    """What one attempt at a chunk (or the merge) produced."""

    chunk_id: int | None = None
    status: WorkerStatus
    stdout: str = ""
    stderr: str = Field("", description="One line saying what went wrong (empty when it went well).")
    output_file: str | None = None
    duration_ms: float = 0.0
    retryable: bool = Field(True, description="Whether another attempt may succeed (data, never parsed).")
    frames: int = 0
    fatal: bool = Field(
        False, description="No chunk of this job can succeed (401/403, access denied): stop scheduling the job."
    )
    throttles: int = Field(0, ge=0, description="Times the platform throttled this attempt (backed off, not retried).")
    manifest: str | None = Field(
        None,
        description="The done-manifest this attempt committed, or (skipped) found vouching for the chunk, exactly "
        "as the store holds it (the client's done index).",
    )

    @property
    def ok(self) -> bool:
        return self.status.ok

    @property
    def exit_code(self) -> int:
        """The process exit code of this outcome (`helios worker run`, the original Lambda payload): 0 done,
        1 failed (a retry may help), 2 failed for good (fix the input), 124 timed out, 130 cancelled (as
        timeout(1) and a shell's Ctrl-C report them)."""
        if self.status in _EXIT_CODES:
            return _EXIT_CODES[self.status]
        return 1 if self.retryable else 2

    @model_validator(mode="before")
    @classmethod
    def _status_from_legacy_exit_code(cls, data: Any) -> Any:
        """Read `{"exitCode": 0, "skipped": true}` from a worker deployed before `status` existed."""
        if isinstance(data, dict) and "status" not in data and isinstance(data.get("exitCode"), int):
            data = dict(data)
            code = data.pop("exitCode")
            skipped = data.pop("skipped", False) is True
            status = _LEGACY_EXIT_CODES.get(code, WorkerStatus.FAILED)
            data["status"] = WorkerStatus.SKIPPED if status is WorkerStatus.OK and skipped else status
        return data

    # -- results a client builds itself (no worker answered) -------------------------------------------
    @classmethod
    def failed(cls, chunk_id: int | None, message: str, *, retryable: bool, duration_ms: float = 0.0) -> WorkerResult:
        return cls(
            chunk_id=chunk_id,
            status=WorkerStatus.FAILED,
            stderr=message,
            retryable=retryable,
            duration_ms=duration_ms,
        )

    @classmethod
    def from_error(cls, chunk_id: int | None, error: BaseException, *, prefix: str = "") -> WorkerResult:
        """A failed result for an exception: its one-line description, and its `retryable` when it has one
        (every HeliosError does); an exception that does not say is taken as transient."""
        retryable = getattr(error, "retryable", True)
        return cls.failed(chunk_id, f"{prefix}{describe(error)}", retryable=bool(retryable))

    @classmethod
    def cancelled(cls, chunk_id: int | None, message: str = "cancelled", *, duration_ms: float = 0.0) -> WorkerResult:
        return cls(
            chunk_id=chunk_id,
            status=WorkerStatus.CANCELLED,
            stderr=message,
            retryable=False,
            duration_ms=duration_ms,
        )

    @classmethod
    def timed_out(cls, chunk_id: int | None, message: str, *, duration_ms: float = 0.0) -> WorkerResult:
        return cls(
            chunk_id=chunk_id,
            status=WorkerStatus.TIMED_OUT,
            stderr=message,
            retryable=True,
            duration_ms=duration_ms,
        )


class ChunkState(StrEnum):
    """Where a chunk stands in a run (progress events, reports, run records)."""

    PENDING = "pending"
    RUNNING = "running"
    RENDERED = "rendered"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (ChunkState.RENDERED, ChunkState.SKIPPED)


class EventKind(StrEnum):
    #: The run resolved its composition (`output` says which location it uses) and store: nothing ran yet.
    RESOLVED = "resolved"
    STARTED = "started"
    #: A running attempt's frames so far (`frames` counts from the chunk's start, not a delta).
    FRAMES = "frames"
    RENDERED = "rendered"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    MERGE_STARTED = "merge-started"
    MERGED = "merged"
    MERGE_SKIPPED = "merge-skipped"
    MERGE_FAILED = "merge-failed"


class ProgressEvent(BaseModel):
    """One thing that happened to a chunk (or the merge), with its attempt, duration and frames."""

    kind: EventKind
    chunk_id: int | None = None
    attempt: int = 0
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    delay_s: float | None = None
    output: str | None = None
    at: float = Field(default_factory=time.time)


class FrameProgress(WireModel):
    """How far a worker is in one chunk: `{"chunkId": 3, "frames": 120, "total": 300, "at": ...}`."""

    chunk_id: int
    frames: int = Field(ge=0, description="Frames captured so far in this attempt.")
    total: int = Field(0, ge=0, description="Frames of the chunk (0: not said).")
    at: float = Field(default_factory=time.time, description="When the worker wrote it (Unix time).")


#: Called by a backend with a chunk's frames so far (FrameProgress.frames) while an attempt runs.
FramesCallback = Callable[[int], None]

#: Where progress events go (a progress bar, the job records); a sink must not block.
EventSink = Callable[[ProgressEvent], None]
