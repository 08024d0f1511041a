"""`helios job run --events FILE`: a run's progress events as JSON lines, for other tools to read or tail.

Each line is one :class:`EventRecord` (camelCase): what happened (`kind`: the ProgressEvent kinds —
`started`, `frames`, `rendered`, `skipped`, `retrying`, `failed`, `cancelled`, `merge-*`, `resolved` — then
one `finished` line with the run's `state` and summary), its chunk, attempt and frames, and the run's
`framesDone` of `totalFrames` at that moment. The file is created (replaced) when the run starts and each
line is written whole and flushed at once, so a reader tailing it never sees half a line; it is a live log,
so unlike outputs it is not committed atomically at the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO

from pydantic import Field

from helios_kit.errors import SpecError
from helios_kit.protocol import EventKind, ProgressEvent, WireModel


class EventRecord(WireModel):
    """One line of an events file."""

    job_id: str
    kind: str
    chunk_id: int | None = None
    attempt: int = 0
    frames: int = 0
    frames_done: int = 0
    total_frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    output: str | None = None
    state: str | None = Field(None, description="The run's final state (`finished` lines only).")
    summary: str | None = Field(None, description="The run's summary line (`finished` lines only).")
    at: float = Field(default_factory=time.time)


class EventsWriter:
    """An event sink appending one JSON line per event to `path` (thread-safe; lines flushed at once)."""

    def __init__(self, path: str | Path, job_id: str = "", frame_sizes: dict[int, int] | None = None) -> None:
        self.path = Path(path)
        self.done: dict[int, int] = {}
        self.begin(job_id, frame_sizes or {})
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - open for the run
        except OSError as error:
            raise SpecError(f"--events {path}: cannot write: {error.strerror or error}", retryable=False) from None

    def begin(self, job_id: str, frame_sizes: dict[int, int]) -> None:
        """Which job the lines are about and its chunks' frame counts (the file is opened, and checked, first)."""
        self.job_id = job_id
        self.sizes = dict(frame_sizes)
        self.total = sum(self.sizes.values())

    def _count(self, event: ProgressEvent) -> None:
        chunk_id = event.chunk_id
        if chunk_id not in self.sizes:
            return
        if event.kind is EventKind.FRAMES:
            self.done[chunk_id] = min(event.frames, self.sizes[chunk_id])
        elif event.kind in (EventKind.RENDERED, EventKind.SKIPPED):
            self.done[chunk_id] = self.sizes[chunk_id]
        elif event.kind is EventKind.RETRYING:
            self.done[chunk_id] = 0

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self._count(event)
            record = EventRecord(
                job_id=self.job_id,
                kind=event.kind.value,
                chunk_id=event.chunk_id,
                attempt=event.attempt,
                frames=event.frames,
                frames_done=sum(self.done.values()),
                total_frames=self.total,
                duration_ms=event.duration_ms,
                error=event.error,
                output=event.output,
                at=event.at,
            )
            self._write(record)

    def finish(self, state: str, summary: str | None, output: str | None = None) -> None:
        """Write the `finished` line and close the file."""
        with self._lock:
            record = EventRecord(
                job_id=self.job_id,
                kind="finished",
                frames_done=sum(self.done.values()),
                total_frames=self.total,
                state=state,
                summary=summary,
                output=output,
            )
            self._write(record)
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write(self, record: EventRecord) -> None:
        if self._file is None:
            return
        self._file.write(record.model_dump_json(by_alias=True) + "\n")
        self._file.flush()
