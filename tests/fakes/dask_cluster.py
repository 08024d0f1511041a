"""A real Dask cluster on 127.0.0.1 for backend tests, and a fake render that says where and when it runs.

* :class:`DaskCluster` starts ``dask scheduler`` and N ``dask worker --no-nanny`` processes (so a worker's pid
  is the process that renders, and SIGKILL really takes it away), each in its own session, on free loopback
  ports without dashboards; it waits for the workers to register and stops every process it started.
* :func:`marked_frame_index_render` is :func:`fakes.renders.frame_index_render` plus what a job folder's
  ``fake-render.json`` asks: ``{"marks": DIR}`` writes ``DIR/chunk-<start>.<pid>.started`` before rendering
  (``.cancelled`` when the render was cancelled), ``{"sleep": S}`` waits S seconds first, ending at once when
  the render is cancelled. The settings live beside the composition, so each job chooses its own without
  restarting the workers; the marks go elsewhere (a file added to the composition's folder would change its
  digest).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fakes.renders import FakeStats, frame_index_render

SETTINGS_FILE = "fake-render.json"
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the fake render -------------------------------------------------------------------------------------
def write_render_settings(job_dir: Path, *, sleep: float = 0.0, marks: Path | None = None) -> None:
    """Ask :func:`marked_frame_index_render` to sleep and/or leave marks for the job in `job_dir`."""
    settings: dict[str, Any] = {"sleep": sleep}
    if marks is not None:
        marks.mkdir(parents=True, exist_ok=True)
        settings["marks"] = str(marks)
    (job_dir / SETTINGS_FILE).write_text(json.dumps(settings))


def marked_frame_index_render(
    config: Any,
    *,
    input_location: str,
    start_frame: int,
    cancel: threading.Event | None = None,
    **kwargs: Any,
) -> FakeStats:
    settings_file = Path(input_location).parent / SETTINGS_FILE
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    marks = Path(settings["marks"]) if settings.get("marks") else None
    name = f"chunk-{start_frame}.{os.getpid()}"
    if marks is not None:
        (marks / f"{name}.started").touch()
    waiter = cancel or threading.Event()
    if waiter.wait(float(settings.get("sleep", 0))):
        if marks is not None:
            (marks / f"{name}.cancelled").touch()
        return FakeStats(0)  # the runtime sees the cancel and commits nothing
    return frame_index_render(config, input_location=input_location, start_frame=start_frame, **kwargs)


def marks_of(marks: Path, suffix: str) -> list[tuple[int, int]]:
    """(start frame, pid) of each mark with `suffix` (`started`, `cancelled`)."""
    found = []
    for path in marks.glob(f"chunk-*.*.{suffix}"):
        start, pid, _ = path.name.removeprefix("chunk-").split(".")
        found.append((int(start), int(pid)))
    return sorted(found)


# -- the cluster -----------------------------------------------------------------------------------------
class DaskCluster:
    """`dask scheduler` + `dask worker` processes on 127.0.0.1; use as a context manager."""

    def __init__(self, workers: int = 2, *, resources: str | None = "chromium=1", logs: Path) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.logs = logs
        self.n_workers = workers
        self.resources = resources
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> DaskCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / log_name, "ab") as log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=dict(os.environ)
            )

    def start(self) -> None:
        self.scheduler = self._spawn(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], "scheduler.log"
        )
        for index in range(self.n_workers):
            argv = [DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny"]
            argv += ["--host", "127.0.0.1", "--name", f"worker-{index}", "--death-timeout", "60"]
            if self.resources:
                argv += ["--resources", self.resources]
            self.workers.append(self._spawn(argv, f"worker-{index}.log"))
        self.wait_for_workers(self.n_workers)

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        """Block until `count` workers have registered with the scheduler (the scheduler may still be starting)."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with Client(self.address, timeout=5, set_as_default=False) as client:
                    client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                    return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{count} Dask workers did not register: see {self.logs}") from None

    def _check_alive(self) -> None:
        for proc in [self.scheduler, *self.workers]:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{proc.args[:2]} exited with {proc.returncode}: see {self.logs}")

    def worker_pids(self) -> list[int]:
        return [proc.pid for proc in self.workers]

    def kill_worker(self, pid: int) -> None:
        """SIGKILL a worker and everything it started (its ffmpeg), as a machine that goes away."""
        proc = next(proc for proc in self.workers if proc.pid == pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler (its machine goes away); the workers stay until stop()."""
        assert self.scheduler is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        """Stop the workers, then the scheduler: SIGTERM, then SIGKILL what has not exited in 10 s."""
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
