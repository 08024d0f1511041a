"""Is a run's owner still there? The `interrupted` state, derived when a record is read.

A runner records its pid and host when it starts and refreshes `heartbeatAt` every HEARTBEAT_S while it
runs. A record that says `pending` or `running` is shown as `interrupted` when its owner is gone: on this
host, its pid no longer exists; on any host, its heartbeat is older than STALE_AFTER_S. Nothing is written
back (a reader never races a live owner); a run's record keeps what its owner last wrote.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from helios_kit.repository import JobState, JobStatus, this_host, utcnow

#: Seconds between heartbeats of a running run.
HEARTBEAT_S = 2.0
#: A heartbeat older than this means the owner is gone, whatever the pid says (other hosts, reused pids).
STALE_AFTER_S = 60.0


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists on this host (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_gone(status: JobStatus, now: datetime | None = None) -> bool:
    """Whether the process that owns a pending or running run is gone (see the module's rule)."""
    if not status.state.active:
        return False
    if status.heartbeat_at is not None:
        age = (now or utcnow()) - status.heartbeat_at
        if age > timedelta(seconds=STALE_AFTER_S):
            return True
    local = status.host in (None, this_host())
    return bool(status.pid) and local and not pid_alive(status.pid)


def observe(status: JobStatus, now: datetime | None = None) -> JobStatus:
    """`status` as a reader should show it: `interrupted` when its owner is gone (finishedAt = last sign)."""
    if owner_gone(status, now):
        status.state = JobState.INTERRUPTED
        status.finished_at = status.finished_at or status.heartbeat_at or status.updated_at
    return status
