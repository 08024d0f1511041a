"""The local backend's long-lived worker processes: a pool of idle workers (at most one per concurrency slot
in use), each keeping its Chromium warm across chunks (see :mod:`helios_kit.worker.lines` for the line
protocol).

A worker is ``python -m helios_kit.backends.local --serve`` in a session of its own, so it, its Chromium and
its ffmpeg are one process group. :func:`run_task` sends one task and reads the worker's stdout line by line
until the result line, handing every other line to a callback; on cancel or timeout it SIGTERMs the group,
SIGKILLs it after a grace period and the worker is gone (the slot's next chunk starts a new, cold one). A
worker that exits without answering is gone too. Only a worker that answered goes back to the pool.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from helios_kit.worker.lines import WorkerTask, parse_result, task_line

#: Seconds between SIGTERM and SIGKILL when a chunk is cancelled or times out.
GRACE_S = 3.0


def exited(pid: int) -> bool:
    """True when the child has exited, without reaping it (so its pid and process group stay reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class WorkerProcess:
    """One long-lived worker: its process, its stdout as a queue of lines (None at end), its stderr file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker, closed by kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helios_kit.backends.local", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"worker-{self.proc.pid}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, task: WorkerTask) -> bool:
        """Write a task line; False when the worker is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(task_line(task).encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def kill(self) -> None:
        """Kill the worker's whole group (Chromium, ffmpeg) before reaping it, so no pid is reused meanwhile."""
        kill_group(self.proc.pid)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self.proc.wait()
        self.stderr.close()


@dataclass
class TaskOutcome:
    """How a task on a worker ended: `stopped` is "cancel", "timeout", "died" or "" (answered)."""

    stopped: str
    result_line: str = ""
    stdout: list[str] = field(default_factory=list)


def run_task(
    worker: WorkerProcess,
    task: WorkerTask,
    cancel: threading.Event,
    deadline: float | None,
    on_line: Callable[[str], None] | None = None,
) -> TaskOutcome:
    """Send `task` and wait for its result line, watching `cancel` and the deadline (monotonic)."""
    outcome = TaskOutcome(stopped="")
    if not worker.send(task):
        outcome.stopped = "died"
        return outcome
    while True:
        reason = "cancel" if cancel.is_set() else "timeout" if deadline and time.monotonic() > deadline else ""
        if reason:
            _stop(worker)
            outcome.stopped = reason
            return outcome
        try:
            line = worker.lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if line is None:
            outcome.stopped = "died"
            return outcome
        outcome.stdout.append(line)
        if parse_result(line) is not None:
            outcome.result_line = line
            return outcome
        if on_line is not None and line:
            on_line(line)


def _stop(worker: WorkerProcess) -> None:
    """SIGTERM the group (the worker stops its render cleanly), SIGKILL after the grace period."""
    kill_group(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while not exited(worker.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class WorkerPool:
    """Idle warm workers to hand out; a worker is either idle here or held by one running chunk."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._idle: list[WorkerProcess] = []
        self._busy: set[WorkerProcess] = set()
        self._lock = threading.Lock()
        self.started = 0

    def take(self) -> WorkerProcess:
        """An idle worker still alive, else a new one."""
        while True:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
                if worker is not None:
                    self._busy.add(worker)
            if worker is None:
                break
            if not exited(worker.pid):
                return worker
            self.drop(worker)
        worker = WorkerProcess(self.env)
        with self._lock:
            self._busy.add(worker)
            self.started += 1
        return worker

    def give_back(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._busy.discard(worker)
            self._idle.append(worker)

    def drop(self, worker: WorkerProcess) -> None:
        """Kill a worker that must not be reused (cancelled, timed out, died)."""
        with self._lock:
            self._busy.discard(worker)
        worker.kill()

    def close(self) -> None:
        """Kill every worker, idle or busy (their chunks end as died)."""
        with self._lock:
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for worker in workers:
            kill_group(worker.pid)
        for worker in workers:
            if worker not in self._busy:
                worker.kill()
