"""Straggler backups: a second attempt for a chunk that runs far longer than the others (docs/ARCHITECTURE.md,
"Straggler backups").

Once a share of a job's chunks is done (``after``, default 75%; or all its chunks but one), a chunk of that
job whose attempt has run longer than ``factor`` x the median chunk time (default 1.5, Spark's rule) gets one
backup attempt on the backend.
The two attempts race; commits are atomic and idempotent, so the first to finish successfully wins and the
other is cancelled through its cancel event. A failed attempt leaves the race to the other one. A backup
attempt that fails on its own (not stopped because the other won or the run ended) is no retry: it prints a
warning line of its own and is counted (``failed``; the run's summary says how many).

:class:`Backups` is what the executor calls instead of the backend (``call``, with the executor's own attempt
function), and a progress-event sink (it learns chunk times from the RENDERED events). One instance may serve
many executors: a batch shares one over every video's chunks, so the median is the batch's (one template,
one cost), while the share done that opens a video's backups is that video's, or the batch's when that is
reached first: a straggler in the first video of a thousand gets its backup once that video waits on it, not
after 750 others. Races are keyed by (job id, chunk id), as chunk ids repeat across a batch's videos. One monitor
thread looks at every running attempt a few times a second; nothing polls per chunk. Backups are off on the
local backend by default: a second attempt on the same machine competes for the same cores and cannot help.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from helios_kit.protocol import EventKind, ProgressEvent, WorkerResult
from helios_kit.spec import Chunk

log = logging.getLogger("helios.stragglers")

#: `run(chunk, cancel, timeout)`: one attempt on the backend (never raises).
AttemptFn = Callable[[Chunk, threading.Event, float | None], WorkerResult]


class BackupPolicy(BaseModel):
    """When a straggling chunk gets a backup attempt."""

    enabled: bool | None = Field(
        None, description="None: the backend's own default (Backend.backups_by_default: on for remote backends)."
    )
    after: float = Field(0.75, gt=0, le=1, description="Share of a job's chunks done before its backups start.")
    factor: float = Field(1.5, gt=1, description="A chunk straggles past factor x the median chunk time.")
    poll_s: float = Field(0.2, gt=0, description="How often the monitor looks at running attempts.")

    def active_for(self, backend_default: bool) -> bool:
        """On or off as set; unset, as the backend says (`Backend.backups_by_default`)."""
        return self.enabled if self.enabled is not None else backend_default


@dataclass
class _Race:
    chunk: Chunk
    attempt: AttemptFn
    label: str
    primary_stop: threading.Event
    timeout: float | None
    job_id: str = ""
    started: float = field(default_factory=time.monotonic)
    backup: threading.Thread | None = None
    backup_stop: threading.Event = field(default_factory=threading.Event)
    backup_result: WorkerResult | None = None
    finished: bool = False


class Backups:
    """Races backup attempts against straggling chunks; counts what it did.

    `total`: the chunks of every job whose executor uses this instance. `name_jobs`: log lines name the job
    as well as the chunk (a batch, whose videos' chunk ids repeat)."""

    def __init__(self, policy: BackupPolicy, total: int, *, name_jobs: bool = False) -> None:
        self.policy = policy
        self.total = max(1, total)
        self.name_jobs = name_jobs
        self._lock = threading.Lock()
        self._durations: list[float] = []
        self._finished = 0
        self._job_totals: dict[str, int] = {}
        self._job_finished: Counter[str] = Counter()
        self._races: dict[tuple[str, int], _Race] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.launched = 0
        self.won = 0
        self.failed = 0

    # -- the progress sinks ------------------------------------------------------------------------------
    def sink_for(self, job_id: str, chunks: int) -> Callable[[ProgressEvent], None]:
        """The progress sink of the executor of job `job_id` (of `chunks` chunks): its chunk times feed the
        median, and its chunks done open its own backups."""
        with self._lock:
            self._job_totals[job_id] = max(1, chunks)
        return lambda event: self._record(job_id, event)

    def _record(self, job_id: str, event: ProgressEvent) -> None:
        if event.kind in (EventKind.RENDERED, EventKind.SKIPPED, EventKind.FAILED) and event.chunk_id is not None:
            with self._lock:
                self._finished += 1
                self._job_finished[job_id] += 1
                if event.kind is EventKind.RENDERED and event.duration_ms:
                    self._durations.append(event.duration_ms / 1000)

    # -- racing ------------------------------------------------------------------------------------------
    def call(
        self, job_id: str, chunk: Chunk, cancel: threading.Event, timeout: float | None, attempt: AttemptFn
    ) -> WorkerResult:
        """Run `attempt` (the calling executor's) on `chunk` of job `job_id` here, on `cancel` (the attempt's
        own event); a backup attempt, through the same `attempt`, may join the race."""
        label = f"{job_id} chunk {chunk.id}" if self.name_jobs else f"chunk {chunk.id}"
        race = _Race(chunk, attempt, label, cancel, timeout, job_id)
        key = (job_id, chunk.id)
        with self._lock:
            self._races[key] = race
            self._ensure_monitor()
        try:
            result = attempt(chunk, cancel, timeout)
        finally:
            with self._lock:
                race.finished = True
                self._races.pop(key, None)
                backup = race.backup
        if backup is None:
            return result
        if result.ok:
            race.backup_stop.set()  # the primary committed first: the backup is cancelled
            return result
        if not (race.backup_result is not None and race.backup_result.ok) and not cancel.is_set():
            backup.join()  # the primary failed on its own: the backup may still make it
        elif cancel.is_set() and race.backup_result is None:
            race.backup_stop.set()  # cancelled or timed out from outside: both stop
            backup.join()
        if race.backup_result is not None and race.backup_result.ok:
            return race.backup_result
        return result

    def _run_backup(self, race: _Race) -> None:
        result = race.attempt(race.chunk, race.backup_stop, race.timeout)
        race.backup_result = result
        if result.ok and not race.finished:
            with self._lock:
                self.won += 1
            log.info("%s: the backup attempt finished first", race.label)
            race.primary_stop.set()  # the backup committed first: the straggler is cancelled
        elif not result.ok and not race.backup_stop.is_set():  # failed on its own, not stopped by the race
            with self._lock:
                self.failed += 1
            why = (result.stderr or "").strip().splitlines()[-1:] or [result.status.value]
            log.warning(
                "%s: straggler backup attempt failed (%s); not a retry: the chunk's own attempt goes on",
                race.label,
                why[0].strip(),
            )

    # -- the monitor -------------------------------------------------------------------------------------
    def _ensure_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="helios-stragglers", daemon=True)
            self._monitor.start()

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.policy.poll_s):
            with self._lock:
                for race in self._stragglers():
                    race.backup = threading.Thread(
                        target=self._run_backup, args=(race,), name=f"helios-backup-{race.chunk.id}", daemon=True
                    )
                    self.launched += 1
                    log.info("%s: straggling; started a backup attempt", race.label)
                    race.backup.start()

    def _stragglers(self) -> list[_Race]:
        """Running attempts past factor x the median chunk time, of jobs with enough chunks done (lock held)."""
        if not self._durations:
            return []
        limit = self.policy.factor * statistics.median(self._durations)
        now = time.monotonic()
        return [
            race
            for race in self._races.values()
            if race.backup is None and not race.finished and now - race.started > limit and self._opened(race.job_id)
        ]

    def _opened(self, job_id: str) -> bool:
        """Whether `job_id`'s backups may start: the share of all chunks done reached `after`, or the share of
        its own did, or all its chunks but one are done (a 2-chunk video waits on the one left)."""
        if self._finished >= self.policy.after * self.total:
            return True
        total = self._job_totals.get(job_id)
        return total is not None and self._job_finished[job_id] >= min(self.policy.after * total, total - 1)
