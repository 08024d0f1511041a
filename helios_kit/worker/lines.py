"""A long-lived worker process that keeps its browser warm: chunks in as JSON lines on stdin, results out as
JSON lines on stdout, one chunk at a time (the local backend's warm workers).

Every line of the protocol starts with a prefix naming its kind, so other kinds (progress lines such as
``HELIOS-WORKER-FRAMES {...}``) and stray output can share the stream: a reader acts on the prefixes it
knows and ignores the rest.

- stdin: ``HELIOS-WORKER-TASK {"request": <WorkerRequest>, "cwd": "/job/dir"}`` (a :class:`WorkerTask`);
- stdout: ``HELIOS-WORKER-RESULT <WorkerResult>`` once per task, and while it renders
  ``HELIOS-WORKER-FRAMES <FrameProgress>`` lines (at most every 0.25 s, and the last frame always), which the
  supervisor turns into the executor's per-frame progress. One-chunk workers (``--no-warm``) print the same.

The worker keeps one :class:`~helios_kit.render.warm.WarmBrowser` (reset between chunks; a broken one is
replaced by a cold one). SIGTERM cancels the chunk in progress and ends the worker (its supervisor kills the
process group after a grace period). End of stdin means the supervisor is gone or done: the worker kills its
own process group (itself, Chromium, ffmpeg) at once, even in the middle of a chunk, so nothing outlives a
`kill -9` of the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from helios_kit.protocol import FrameProgress, WireModel, WorkerRequest, WorkerResult

if TYPE_CHECKING:
    from helios_kit.worker.runtime import WorkerRuntime

TASK_MARK = "HELIOS-WORKER-TASK "
RESULT_MARK = "HELIOS-WORKER-RESULT "
FRAMES_MARK = "HELIOS-WORKER-FRAMES "
#: Seconds between two frames lines of a worker.
FRAMES_INTERVAL_S = 0.25


class WorkerTask(WireModel):
    """One chunk for a warm worker: the request, and the folder to run it in (a job's relative paths)."""

    request: WorkerRequest
    cwd: str | None = None


def task_line(task: WorkerTask) -> str:
    return TASK_MARK + task.model_dump_json(by_alias=True) + "\n"


def result_line(result: WorkerResult) -> str:
    return RESULT_MARK + result.model_dump_json(by_alias=True) + "\n"


def parse_result(line: str) -> WorkerResult | None:
    """The WorkerResult a result line carries; None for a line of another kind."""
    if not line.startswith(RESULT_MARK):
        return None
    return WorkerResult.model_validate_json(line[len(RESULT_MARK) :])


def parse_frames_line(line: str) -> FrameProgress | None:
    """The FrameProgress of a worker's `HELIOS-WORKER-FRAMES {...}` line; None for any other line."""
    if not line.startswith(FRAMES_MARK):
        return None
    try:
        return FrameProgress.model_validate_json(line[len(FRAMES_MARK) :])
    except ValueError:
        return None


def frames_printer(
    chunk_id: int, interval: float = FRAMES_INTERVAL_S, stdout: IO[str] | None = None
) -> Callable[[int, int], None]:
    """A render progress callback `(done, total)` printing frames lines (the last frame always)."""
    last = float("-inf")

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < interval and done < total:
            return
        last = now
        line = FrameProgress(chunk_id=chunk_id, frames=done, total=total).model_dump_json(by_alias=True)
        out = stdout or sys.stdout
        out.write("\n" + FRAMES_MARK + line + "\n")
        out.flush()

    return report


def _read_tasks(stdin: IO[str], tasks: queue.Queue[WorkerTask | None]) -> None:
    """Queue every task line; at end of input, end the whole process group (the supervisor is gone)."""
    for line in stdin:
        if line.startswith(TASK_MARK):
            tasks.put(WorkerTask.model_validate_json(line[len(TASK_MARK) :]))
    tasks.put(None)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def stop_on_sigterm(stop: threading.Event) -> int:
    """A worker's SIGTERM handler: the supervisor asks, so `stop` is set (the chunk stops cleanly; the
    supervisor SIGKILLs the group after a grace period); if the supervisor itself died (kill -9), the whole
    process group (this worker, Chromium, ffmpeg) is killed at once. Returns the supervisor's pid."""
    parent = int(os.environ.get("HELIOS_SUPERVISOR_PID") or os.getppid())

    def on_term(*_: object) -> None:
        if os.getppid() != parent:  # our supervisor died: take everything we started with us
            os.killpg(os.getpgid(0), signal.SIGKILL)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    return parent


def run_and_answer(runtime: WorkerRuntime, request: WorkerRequest, cancel: threading.Event, stdout: IO[str]) -> None:
    """Render one request's chunk, printing frames lines as it goes and its result line at the end."""
    result = runtime.run(
        request.job_url,
        request.chunk_id,
        request.store,
        request.force,
        cancel=cancel,
        progress=frames_printer(request.chunk_id, stdout=stdout),
        **request.run_flags(),
    )
    stdout.write("\n" + result_line(result))
    stdout.flush()


def serve(stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    """Run tasks from `stdin` until it ends, each in one warm browser; answer each with a result line."""
    from helios_kit.render.warm import WarmBrowser
    from helios_kit.worker.runtime import WorkerRuntime

    stop = threading.Event()
    stop_on_sigterm(stop)
    tasks: queue.Queue[WorkerTask | None] = queue.Queue()
    threading.Thread(target=_read_tasks, args=(stdin, tasks), name="worker-stdin", daemon=True).start()
    home = os.getcwd()
    with WarmBrowser() as warm:
        runtime = WorkerRuntime(os.environ.get("HELIOS_WORKSPACE_DIR") or None, warm=warm)
        while (task := _next_task(tasks, stop)) is not None:
            with contextlib.suppress(OSError):
                os.chdir(task.cwd or home)
            run_and_answer(runtime, task.request, stop, stdout)
    return 0


def _next_task(tasks: queue.Queue[WorkerTask | None], stop: threading.Event) -> WorkerTask | None:
    """The next task; None when input ended or SIGTERM asked the worker to stop."""
    while not stop.is_set():
        try:
            return tasks.get(timeout=0.1)
        except queue.Empty:
            continue
    return None
