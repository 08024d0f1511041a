"""Sample-based prediction of a job's wall time and cost, before it runs (DESIGN §9).

:func:`measure` renders a few short samples of the job's composition on this machine, each starting at a
chunk's first frame so its fast-forward from frame 0 is measured as a run pays it; it records per sample the
startup (browser, page), the fast-forward, the frame loop and the CPU time of this process and its children
(Chromium, ffmpeg). From those, :class:`Measurement` knows seconds per captured frame, seconds per
fast-forwarded frame, the startup of a chunk (plus a worker process's own start, timed once) and how many
cores one render keeps busy.

:func:`predict` turns that into an :class:`Estimate`:

* local (no pricing): every chunk's single-slot time, scheduled over N slots in plan order, where m chunks
  running at once share the machine's cores (each runs at `min(1, cores / (m x cores-per-render))` of its
  own speed); plus the run's own start and the merge.
* a priced backend (Lambda, Cloud Run): each chunk's time on one remote worker (its startup plus this
  machine's time divided by the pricing's `speed`), scheduled over N independent slots; cost per attempt
  from :class:`~helios_kit.pricing.Pricing` (memory / vCPU seconds plus a request).

This module knows nothing of the CLI or of backends' classes: the caller passes the pricing.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field

from helios_kit.pricing import Pricing
from helios_kit.protocol import WireModel
from helios_kit.spec import Chunk, JobSpec

log = logging.getLogger("helios.estimate")

#: Seconds of a merge by stream copy (a few ffmpeg and ffprobe runs), per chunk, on top of one process start.
MERGE_PER_CHUNK_S = 0.1


class Sample(BaseModel):
    """One sample render: `frames` frames from `start_frame`, reached by fast-forwarding from frame 0."""

    start_frame: int
    frames: int
    wall_s: float
    fast_forward_s: float
    loop_s: float
    cpu_s: float

    @property
    def startup_s(self) -> float:
        return max(0.0, self.wall_s - self.fast_forward_s - self.loop_s)


class Measurement(BaseModel):
    """What rendering the samples showed about this composition on this machine."""

    samples: list[Sample]
    process_s: float = Field(0.0, description="A worker process's start (Python, imports), timed once.")
    cores: int = Field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def frame_s(self) -> float:
        """Seconds per captured and encoded frame (all samples' loops over all their frames)."""
        return sum(s.loop_s for s in self.samples) / max(1, sum(s.frames for s in self.samples))

    @property
    def fast_forward_frame_s(self) -> float:
        """Seconds per fast-forwarded frame (samples that started after frame 0)."""
        moved = [s for s in self.samples if s.start_frame > 0]
        if not moved:
            return self.frame_s / 4  # never measured (one chunk): stepping without capture is cheaper
        return sum(s.fast_forward_s for s in moved) / sum(s.start_frame for s in moved)

    @property
    def startup_s(self) -> float:
        """A chunk's startup before its first frame: the worker process, the browser, the page."""
        return self.process_s + statistics.median(s.startup_s for s in self.samples)

    @property
    def cores_per_render(self) -> float:
        """CPU seconds per wall second of one render (Chromium, ffmpeg and the driver together)."""
        wall = sum(s.wall_s for s in self.samples)
        return max(0.25, sum(s.cpu_s for s in self.samples) / wall) if wall > 0 else 1.0

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.frame_s if self.frame_s > 0 else 0.0

    def chunk_s(self, chunk: Chunk) -> float:
        """One chunk alone on this machine: startup, fast-forward to its start, its frames."""
        return self.startup_s + chunk.start_frame * self.fast_forward_frame_s + chunk.frame_count * self.frame_s


class Estimate(WireModel):
    """The prediction `helios job estimate --json` prints (camelCase)."""

    wall_seconds: float
    cost_usd: float
    frames: int
    sample_frames: int
    backend: str = "local"
    chunks: int = 0
    concurrency: int = 1
    frames_per_second: float = Field(0.0, description="Measured here, one render slot.")
    chunk_seconds: list[float] = Field(default_factory=list, description="Each chunk's predicted time alone.")


# -- measuring ---------------------------------------------------------------------------------------------
def sample_starts(spec: JobSpec, samples: int) -> list[Chunk]:
    """Up to `samples` chunks spread evenly over the plan (first and last included)."""
    chunks = spec.chunks
    if samples <= 1 or len(chunks) == 1:
        return [chunks[0]]
    count = min(samples, len(chunks))
    picks = sorted({round(i * (len(chunks) - 1) / (count - 1)) for i in range(count)})
    return [chunks[i] for i in picks]


class TreeCpu:
    """CPU seconds of this process and every descendant (Chromium's browser, renderer and GPU processes,
    ffmpeg) while a block runs, sampled with psutil every `interval` s: a child's last sample counts."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="helios-tree-cpu", daemon=True)
        self.seconds = 0.0

    def _sample(self) -> None:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                with child.oneshot():
                    times = child.cpu_times()
                    self._seen[(child.pid, child.create_time())] = times.user + times.system
            except psutil.Error:
                continue

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCpu:
        import psutil  # here, not at import: `helios job run` registers the estimate command, rarely runs it

        times = psutil.Process().cpu_times()
        self._own = times.user + times.system
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        import psutil

        times = psutil.Process().cpu_times()
        self.seconds = times.user + times.system - self._own + sum(self._seen.values())


def render_sample(spec: JobSpec, input_location: str, chunk: Chunk, frames: int, work: Path) -> Sample:
    """Render `frames` frames from `chunk`'s start (fast-forward included) into `work`; time each part."""
    from helios_kit.render.session import render_range

    count = max(1, min(frames, chunk.frame_count))
    started = time.monotonic()
    with TreeCpu() as cpu:
        stats = render_range(
            spec.config,
            input_location=input_location,
            start_frame=chunk.start_frame,
            frame_count=count,
            output_path=work / f"sample-{chunk.id}.mp4",
            quiet=True,
        )
    wall = time.monotonic() - started
    return Sample(
        start_frame=chunk.start_frame,
        frames=count,
        wall_s=wall,
        fast_forward_s=stats.fast_forward_ms / 1000,
        loop_s=stats.loop_ms / 1000,
        cpu_s=max(0.0, cpu.seconds),
    )


def worker_process_s() -> float:
    """Wall seconds a fresh worker process takes to start and import the renderer (timed once)."""
    started = time.monotonic()
    code = "import helios_kit.worker.runtime, helios_kit.render.session, helios_kit.store"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    return time.monotonic() - started


def measure(spec: JobSpec, input_location: str, *, samples: int = 3, sample_frames: int = 8) -> Measurement:
    """Render the samples here (RenderError when the composition cannot render) and time them."""
    work = Path(tempfile.mkdtemp(prefix="helios-estimate-"))
    try:
        measured = [
            render_sample(spec, input_location, chunk, sample_frames, work) for chunk in sample_starts(spec, samples)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Measurement(samples=measured, process_s=worker_process_s())


# -- predicting --------------------------------------------------------------------------------------------
def shared_schedule(durations: list[float], slots: int, cores: float, cores_per_render: float) -> float:
    """Wall time of jobs of `durations` (each alone) started in order on `slots` slots, where the m running
    at once each progress at min(1, cores / (m x cores_per_render)) of their own speed."""
    pending = list(durations)
    running: list[float] = []  # remaining work (seconds alone) of each running job
    now = 0.0
    while pending or running:
        while pending and len(running) < slots:
            running.append(pending.pop(0))
        speed = min(1.0, cores / (len(running) * cores_per_render))
        step = min(running) / speed
        now += step
        running = [left - step * speed for left in running]
        running = [left for left in running if left > 1e-9]
    return now


def independent_schedule(durations: list[float], slots: int) -> float:
    """Wall time of jobs of `durations` started in order on `slots` independent workers."""
    free = [0.0] * min(slots, max(1, len(durations)))
    heapq.heapify(free)
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        end = max(end, start + duration)
        heapq.heappush(free, start + duration)
    return end


def run_overhead_s(spec: JobSpec, measured: Measurement) -> float:
    """What a run spends outside its chunks: its own start (about one process start) and the merge (seen
    to take about another, plus a little per chunk). A process start was timed here, so this follows the
    machine's load as the samples do."""
    return 2 * measured.process_s + MERGE_PER_CHUNK_S * len(spec.chunks)


def predict(
    spec: JobSpec, measured: Measurement, *, pricing: Pricing | None = None, concurrency: int | None = None
) -> Estimate:
    """Wall time (and cost, for a priced backend) of running every chunk of `spec` and merging."""
    alone = [measured.chunk_s(chunk) for chunk in spec.chunks]
    sample_frames = sum(s.frames for s in measured.samples)
    if pricing is None:
        slots = concurrency or measured.cores
        wall = shared_schedule(alone, slots, measured.cores, measured.cores_per_render) + run_overhead_s(spec, measured)
        cost = 0.0
        chunk_seconds = alone
        name = "local"
    else:
        slots = concurrency or pricing.concurrency
        chunk_seconds = [pricing.startup_s + seconds / pricing.speed for seconds in alone]
        wall = independent_schedule(chunk_seconds, slots) + run_overhead_s(spec, measured)
        cost = sum(pricing.attempt_usd(seconds) for seconds in chunk_seconds)
        name = pricing.backend
    return Estimate(
        wall_seconds=round(wall, 3),
        cost_usd=round(cost, 6),
        frames=spec.config.frame_count,
        sample_frames=sample_frames,
        backend=name,
        chunks=len(spec.chunks),
        concurrency=slots,
        frames_per_second=round(measured.frames_per_second, 3),
        chunk_seconds=[round(seconds, 3) for seconds in chunk_seconds],
    )


def estimate_job(
    spec: JobSpec,
    input_location: str,
    *,
    pricing: Pricing | None = None,
    concurrency: int | None = None,
    samples: int = 3,
    sample_frames: int = 8,
) -> Estimate:
    """Measure samples of `spec` here, then predict (see :func:`predict`)."""
    measured = measure(spec, input_location, samples=samples, sample_frames=sample_frames)
    log.debug("estimate samples: %s", measured.model_dump_json())
    return predict(spec, measured, pricing=pricing, concurrency=concurrency)
