"""The local backend: chunks render in worker processes on this machine.

By default (``warm``) workers are long-lived, one per concurrency slot in use, and keep their Chromium warm
across chunks and jobs (:mod:`helios_kit.backends.warm_workers`, :mod:`helios_kit.worker.lines`): tasks go in
and results come out as prefixed JSON lines; each worker is a process group of its own, killed on cancel or
timeout (that slot's next chunk starts a new, cold worker) and when the backend closes; a worker whose
supervisor dies sees its stdin end and kills its group. With ``--no-warm`` each chunk renders in a process of
its own, as follows.

A one-chunk worker is ``python -m helios_kit.backends.local '<WorkerRequest JSON>'``: it runs
:class:`helios_kit.worker.runtime.WorkerRuntime` (load the spec, skip if complete, render, commit to the
store) and prints its :class:`WorkerResult` as the last line of stdout. It starts in a new session, so it and
everything it launches (Chromium, ffmpeg) share one process group; that group is killed when the chunk ends
— after success too — so no Chromium or ffmpeg outlives its chunk, whether it succeeded, failed, timed out
or was cancelled. Cancel and timeout send SIGTERM (the worker stops its render cleanly) and SIGKILL after a
grace period. Default concurrency is the CPU count.

Per-frame progress travels over the same stdout: the worker prints `HELIOS-WORKER-FRAMES {"chunkId": ..,
"frames": ..}` lines (at most every 0.25 s, and the last frame) and the supervisor, tailing the output as it
waits (a warm worker: reading its lines), hands each count to the executor's `on_frames` callback
(:func:`helios_kit.worker.lines.parse_frames_line`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pydantic import Field

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext, WorkerRequest, WorkerResult
from helios_kit.protocol import FramesCallback
from helios_kit.spec import Chunk, JobSpec

if TYPE_CHECKING:  # the worker machinery loads when the backend runs, not when its options are declared
    from helios_kit.backends.warm_workers import WorkerPool
    from helios_kit.worker.lines import WorkerTask


class LocalOptions(BackendOptions):
    workspace_dir: str | None = Field(None, description="Folder for the workers' temporary files.")
    warm: bool = Field(True, description="Keep worker processes and their Chromium across chunks (reset between).")


class LocalBackend(Backend):
    """Renders chunks in worker processes on this machine, one process group per chunk."""

    name = "local"
    Options = LocalOptions
    reports_frames = True
    backups_by_default = False  # a second attempt would compete for the same cores

    def __init__(self, options: LocalOptions | None = None) -> None:
        super().__init__(options)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None

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
        on_frames: FramesCallback | None = None,
    ) -> WorkerResult:
        from helios_kit.backends.warm_workers import kill_group
        from helios_kit.worker.lines import WorkerTask

        started = time.monotonic()
        cwd = context.job_dir if Path(context.job_dir).is_dir() else None
        if self.options.warm:  # type: ignore[attr-defined]
            task = WorkerTask(request=context.worker_request(chunk), cwd=cwd)
            return self._run_warm(chunk, task, cancel, timeout, on_frames)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self._start_worker(context.worker_request(chunk), cwd, out, err)
            tail = FramesTail(out, on_frames)
            try:
                stopped = self._supervise(proc, cancel, started, timeout, tail.poll)
                tail.poll()
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

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ, HELIOS_SUPERVISOR_PID=str(os.getpid()))
        if self.options.workspace_dir:  # type: ignore[attr-defined]
            env["HELIOS_WORKSPACE_DIR"] = self.options.workspace_dir  # type: ignore[attr-defined]
        return env

    def _run_warm(
        self,
        chunk: Chunk,
        task: WorkerTask,
        cancel: threading.Event,
        timeout: float | None,
        on_frames: FramesCallback | None,
    ) -> WorkerResult:
        """Run the task on a warm worker; a worker that did not answer (cancel, timeout, death) is killed."""
        from helios_kit.backends.warm_workers import WorkerPool, run_task
        from helios_kit.worker.lines import parse_result

        started = time.monotonic()
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(self._worker_env())
            pool = self._pool
        worker = pool.take()
        deadline = started + timeout if timeout is not None else None
        outcome = run_task(worker, task, cancel, deadline, _frames_lines(on_frames))
        duration_ms = (time.monotonic() - started) * 1000
        if outcome.result_line:
            pool.give_back(worker)
            reported = parse_result(outcome.result_line)
            assert reported is not None
            return reported.model_copy(update={"duration_ms": duration_ms})
        tail = worker.stderr_tail() if outcome.stopped == "died" else ""
        pool.drop(worker)
        if outcome.stopped == "timeout":
            return WorkerResult.timed_out(chunk.id, f"timed out after {timeout:g} s", duration_ms=duration_ms)
        if outcome.stopped == "cancel":
            return WorkerResult.cancelled(chunk.id, duration_ms=duration_ms)
        stdout = "\n".join(outcome.stdout)
        return _died(chunk.id, worker.proc.returncode or 0, stdout, tail, duration_ms)

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
        self,
        proc: subprocess.Popen[bytes],
        cancel: threading.Event,
        started: float,
        timeout: float | None,
        tick: Callable[[], None] = lambda: None,
    ) -> str:
        """Wait for the worker (calling `tick` on each turn); on cancel or timeout, SIGTERM its group then
        SIGKILL. Returns why it stopped."""
        from helios_kit.backends.warm_workers import GRACE_S, exited, kill_group

        while not exited(proc.pid):
            tick()
            reason = ""
            if cancel.is_set():
                reason = "cancel"
            elif timeout is not None and time.monotonic() - started > timeout:
                reason = "timeout"
            if reason:
                kill_group(proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + GRACE_S
                while not exited(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                return reason
            cancel.wait(0.05)
        return ""

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs)
            pool, self._pool = self._pool, None
        if procs:
            from helios_kit.backends.warm_workers import kill_group

            for proc in procs:
                kill_group(proc.pid)
        if pool is not None:
            pool.close()


class FramesTail:
    """Reads what a worker appended to its stdout file since the last look (without moving the writer's
    offset) and passes each frames line's count to `on_frames`."""

    def __init__(self, file: IO[bytes], on_frames: FramesCallback | None) -> None:
        self.fd = file.fileno()
        self.on_frames = on_frames
        self.offset = 0
        self.partial = b""

    def poll(self) -> None:
        if self.on_frames is None:
            return
        from helios_kit.worker.lines import parse_frames_line

        while chunk := os.pread(self.fd, 65536, self.offset):
            self.offset += len(chunk)
            *lines, self.partial = (self.partial + chunk).split(b"\n")
            for line in lines:
                progress = parse_frames_line(line.decode(errors="replace"))
                if progress is not None:
                    self.on_frames(progress.frames)


def _frames_lines(on_frames: FramesCallback | None) -> Callable[[str], None] | None:
    """A warm worker's line handler passing each frames line's count to `on_frames`."""
    if on_frames is None:
        return None
    from helios_kit.worker.lines import parse_frames_line

    def on_line(line: str) -> None:
        progress = parse_frames_line(line)
        if progress is not None:
            on_frames(progress.frames)

    return on_line


def _read_back(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def _reported_result(stdout: str) -> WorkerResult | None:
    """The WorkerResult the worker printed as its last marked line, if it got that far."""
    from helios_kit.worker.lines import RESULT_MARK

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
    from helios_kit.worker.lines import run_and_answer, stop_on_sigterm
    from helios_kit.worker.runtime import WorkerRuntime

    request = WorkerRequest.model_validate_json(argv[0])
    cancel = threading.Event()
    _die_with_parent(stop_on_sigterm(cancel))
    run_and_answer(WorkerRuntime(os.environ.get("HELIOS_WORKSPACE_DIR") or None), request, cancel, sys.stdout)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from helios_kit.worker.lines import serve

        sys.exit(serve())
    sys.exit(_worker_main(sys.argv[1:]))
