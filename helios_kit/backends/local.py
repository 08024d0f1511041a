"""The local backend: each chunk renders in its own worker process on this machine.

A worker is ``python -m helios_kit.backends.local '<WorkerRequest JSON>'``: it runs
:class:`helios_kit.worker.runtime.WorkerRuntime` (load the spec, skip if complete, render, commit to the
store) and prints its :class:`WorkerResult` as the last line of stdout. It starts in a new session, so it and
everything it launches (Chromium, ffmpeg) share one process group; that group is killed when the chunk ends
— after success too — so no Chromium or ffmpeg outlives its chunk, whether it succeeded, failed, timed out
or was cancelled. Cancel and timeout send SIGTERM (the worker stops its render cleanly) and SIGKILL after a
grace period. Default concurrency is the CPU count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from pydantic import Field

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext, WorkerRequest, WorkerResult
from helios_kit.spec import Chunk, JobSpec

RESULT_MARK = "HELIOS-WORKER-RESULT "
#: Seconds between SIGTERM and SIGKILL when a chunk is cancelled or times out.
GRACE_S = 3.0


class LocalOptions(BackendOptions):
    workspace_dir: str | None = Field(None, description="Folder for the workers' temporary files.")


def _exited(pid: int) -> bool:
    """True when the child has exited, without reaping it (so its pid and process group stay reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class LocalBackend(Backend):
    """Renders chunks in worker processes on this machine, one process group per chunk."""

    name = "local"
    Options = LocalOptions

    def __init__(self, options: LocalOptions | None = None) -> None:
        super().__init__(options)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def default_concurrency(self) -> int:
        return os.cpu_count() or 1

    def worker_argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, "-m", "helios_kit.backends.local", request.model_dump_json(by_alias=True)]

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        started = time.monotonic()
        cwd = context.job_dir if Path(context.job_dir).is_dir() else None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self._start_worker(context.worker_request(chunk), cwd, out, err)
            try:
                stopped = self._supervise(proc, cancel, started, timeout)
            finally:
                kill_group(proc.pid)  # everything the worker started, before its pid can be reused
                proc.wait()
                with self._lock:
                    self._procs.discard(proc)
            stdout, stderr = _read_back(out), _read_back(err)
        duration_ms = (time.monotonic() - started) * 1000
        if stopped == "timeout":
            return WorkerResult.timed_out(chunk.id, f"timed out after {timeout:g} s", duration_ms=duration_ms)
        if stopped == "cancel":
            return WorkerResult.cancelled(chunk.id, duration_ms=duration_ms)
        reported = _reported_result(stdout)
        if reported is not None:
            return reported.model_copy(update={"duration_ms": duration_ms})
        return _died(chunk.id, proc.returncode, stdout, stderr, duration_ms)

    def _start_worker(
        self, request: WorkerRequest, cwd: str | None, out: IO[bytes], err: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start a worker process for `request` in its own session (one process group to kill)."""
        env = dict(os.environ, HELIOS_SUPERVISOR_PID=str(os.getpid()))
        if self.options.workspace_dir:  # type: ignore[attr-defined]
            env["HELIOS_WORKSPACE_DIR"] = self.options.workspace_dir  # type: ignore[attr-defined]
        proc = subprocess.Popen(
            self.worker_argv(request),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        with self._lock:
            self._procs.add(proc)
        return proc

    def _supervise(
        self, proc: subprocess.Popen[bytes], cancel: threading.Event, started: float, timeout: float | None
    ) -> str:
        """Wait for the worker; on cancel or timeout, SIGTERM its group then SIGKILL. Returns why it stopped."""
        while not _exited(proc.pid):
            reason = ""
            if cancel.is_set():
                reason = "cancel"
            elif timeout is not None and time.monotonic() - started > timeout:
                reason = "timeout"
            if reason:
                kill_group(proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + GRACE_S
                while not _exited(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                return reason
            cancel.wait(0.05)
        return ""

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            kill_group(proc.pid)


def _read_back(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def _reported_result(stdout: str) -> WorkerResult | None:
    """The WorkerResult the worker printed as its last marked line, if it got that far."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return WorkerResult.model_validate_json(line[len(RESULT_MARK) :])
    return None


def _died(chunk_id: int, code: int, stdout: str, stderr: str, duration_ms: float) -> WorkerResult:
    """A worker that exited without reporting (a crash, a kill): a failed attempt that may succeed again."""
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [""]
    why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    result = WorkerResult.failed(
        chunk_id, f"worker process died ({why}) {tail[0]}".strip(), retryable=True, duration_ms=duration_ms
    )
    return result.model_copy(update={"stdout": stdout})


def _die_with_parent(parent: int) -> None:
    """Get SIGTERM when the supervising thread dies (Linux prctl PR_SET_PDEATHSIG), so a `kill -9` of
    `helios job run` leaves no worker, Chromium or ffmpeg behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.killpg(os.getpgid(0), signal.SIGKILL)


def _worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: render one chunk, print the result line."""
    from helios_kit.worker.runtime import WorkerRuntime

    request = WorkerRequest.model_validate_json(argv[0])
    cancel = threading.Event()
    parent = int(os.environ.get("HELIOS_SUPERVISOR_PID") or os.getppid())

    def on_term(*_: object) -> None:
        if os.getppid() != parent:  # our supervisor died (kill -9): take everything we started with us
            os.killpg(os.getpgid(0), signal.SIGKILL)
        cancel.set()  # the supervisor asks: stop the render cleanly (it SIGKILLs the group after a grace)

    signal.signal(signal.SIGTERM, on_term)
    _die_with_parent(parent)
    runtime = WorkerRuntime(os.environ.get("HELIOS_WORKSPACE_DIR") or None)
    result = runtime.run(
        request.job_url, request.chunk_id, request.store, request.force, cancel=cancel, **request.run_flags()
    )
    sys.stdout.write("\n" + RESULT_MARK + result.model_dump_json(by_alias=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
