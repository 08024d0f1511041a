"""Helpers for job-execution tests: a frame-index composition, job folders, in-process backends, and a
process listing to find survivors (Chromium, ffmpeg, workers) by an environment tag."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helios_kit.backends.base import Backend, ChunkContext, WorkerResult
from helios_kit.planner import plan_job
from helios_kit.spec import Chunk, JobSpec, RenderConfig, dump

#: Frame n shows n as 10 vertical bars, white = 1, MSB left (what fakes.renders.decode_frame_indexes reads).
FRAME_INDEX_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><style>
html, body { margin: 0; background: #000; overflow: hidden; }
#bits { display: flex; width: 100vw; height: 100vh; }
#bits div { flex: 1; background: #000; }
</style></head><body><div id="bits"></div><script>
const FPS = 30, BITS = 10, cells = [];
for (let i = 0; i < BITS; i++) cells.push(document.getElementById("bits").appendChild(document.createElement("div")));
function paint() {
  const n = Math.round(performance.now() * FPS / 1000);
  cells.forEach((c, i) => { c.style.background = (n >> (BITS - 1 - i)) & 1 ? "#fff" : "#000"; });
  requestAnimationFrame(paint);
}
paint();
</script></body></html>
"""


def make_job(
    folder: Path,
    *,
    frames: int = 40,
    chunks: int = 4,
    job_id: str = "job-1",
    width: int = 160,
    height: int = 120,
    html: str = FRAME_INDEX_HTML,
) -> Path:
    """A composition and its job.json in `folder`; returns the job file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(html)
    config = RenderConfig(input="index.html", width=width, height=height, fps=30, frame_count=frames)
    spec = plan_job(config, concurrency=chunks, job_id=job_id)
    path = folder / "job.json"
    dump(spec, path)
    return path


class RuntimeBackend(Backend):
    """Runs chunks in this process through WorkerRuntime with a stand-in render function."""

    name = "runtime"
    backups_by_default = False  # in this process, on this machine's cores, as the local backend

    def __init__(self, render: Callable[..., Any], workspace: Path) -> None:
        super().__init__()
        self.render = render
        self.workspace = workspace
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        from helios_kit.worker.runtime import WorkerRuntime

        with self.lock:
            self.calls.append(chunk.id)
        return WorkerRuntime(self.workspace, render=self.render).run(
            context.job_url, chunk.id, context.store_url, context.force, cancel=cancel
        )


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """(pid, command) of live processes whose environment holds `HELIOS_TEST_PROCESS_TAG=tag`."""
    found = []
    needle = f"HELIOS_TEST_PROCESS_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
            if state == b"Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0"):
            found.append((int(entry), command))
    return found


def wait_no_tagged_processes(tag: str, timeout: float = 10.0) -> list[tuple[int, str]]:
    """Wait until no process carries `tag`; returns the survivors (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
