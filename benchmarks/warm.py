"""Warm vs cold browsers: 12 one-second 320x240 videos (30 fps) of one template, each with different props.

- cold CLI: one `helios render TEMPLATE --props JSON` process per video (Python start-up, the CLI's own checks
  of the page, a new Chromium each);
- cold worker: one Python process per video calling `render_range` without `warm` (what the local backend's
  `--no-warm` worker does per chunk: Python start-up + a new Chromium);
- warm: one Python process rendering the 12 videos in a loop with one kept Chromium (`render_range(...,
  warm=WarmBrowser())`, the browser reset between videos), its own start-up included in the time;
- local backend: each video as a one-chunk job run by `LocalBackend.run_chunk`, one after another, with
  `--no-warm` (a worker process per chunk) and with warm workers (one kept worker and browser).

Prints each wall time and the ratios. Usage: python benchmarks/warm.py [videos]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; width: 100%; height: 100%; background: #123; color: #fff; font: 28px sans-serif; }
#name { position: absolute; top: 90px; left: 0; width: 100%; text-align: center; animation: in 1s ease-out both; }
@keyframes in { from { opacity: 0; transform: translateY(20px); } to { opacity: 1; transform: none; } }
</style></head><body><div id="name"></div><script>
document.getElementById("name").textContent = `Hello, ${window.helios.props.name}! #${window.helios.props.score}`;
</script></body></html>
"""
W, H, FPS = 320, 240, 30


def rows(count: int) -> list[dict[str, object]]:
    return [{"name": f"Person {index}", "score": index * 7} for index in range(count)]


def cold(template: Path, out: Path, count: int) -> float:
    started = time.monotonic()
    for index, props in enumerate(rows(count)):
        argv = [sys.executable, "-m", "helios_kit.cli", "render", str(template), "-o", str(out / f"cold-{index}.mp4")]
        argv += ["--width", str(W), "--height", str(H), "--fps", str(FPS), "--duration", "1", "--quiet"]
        subprocess.run([*argv, "--props", json.dumps(props)], check=True, capture_output=True)
    return time.monotonic() - started


def child(template: str, out: str, first: int, count: int, warm: bool) -> None:
    """Runs in its own process: renders rows [first, first + count), on one WarmBrowser when `warm`."""
    from helios_kit.render import render_range
    from helios_kit.render.warm import WarmBrowser
    from helios_kit.spec import RenderConfig

    with WarmBrowser() as browser:
        for index, props in list(enumerate(rows(first + count)))[first:]:
            config = RenderConfig(input="index.html", width=W, height=H, fps=FPS, frame_count=FPS, props=props)
            render_range(
                config,
                input_location=template,
                start_frame=0,
                frame_count=FPS,
                output_path=Path(out) / f"{'warm' if warm else 'worker'}-{index}.mp4",
                warm=browser if warm else None,
            )
        assert browser.launches == (1 if warm else 0), browser.launches


def in_processes(template: Path, out: Path, count: int, warm: bool) -> float:
    """Warm: one process for all videos; cold: one process per video."""
    started = time.monotonic()
    batches = [(0, count)] if warm else [(index, 1) for index in range(count)]
    for first, size in batches:
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import warm; "
        code += f"warm.child({str(template)!r}, {str(out)!r}, {first}, {size}, {warm})"
        subprocess.run([sys.executable, "-c", code], check=True)
    return time.monotonic() - started


def local_backend(template: Path, out: Path, count: int, warm: bool) -> float:
    """The videos as one-chunk jobs on the local backend, warm workers or a worker process per chunk."""
    import threading

    from helios_kit.backends.base import ChunkContext
    from helios_kit.backends.local import LocalBackend, LocalOptions
    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig, dump, load

    jobs = []
    for index, props in enumerate(rows(count)):
        folder = out / f"job-{'warm' if warm else 'cold'}-{index}"
        folder.mkdir()
        config = RenderConfig(input=str(template), width=W, height=H, fps=FPS, frame_count=FPS, props=props)
        dump(plan_job(config, concurrency=1, job_id=f"row-{index}"), folder / "job.json")
        jobs.append(folder / "job.json")
    started = time.monotonic()
    with LocalBackend(LocalOptions(warm=warm)) as backend:
        for job in jobs:
            spec = load(job)
            context = ChunkContext(job_url=str(job), job_dir=str(job.parent), store_url=str(job.parent))
            result = backend.run_chunk(spec, spec.chunks[0], context, cancel=threading.Event())
            assert result.ok, result.stderr
    return time.monotonic() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    print(
        f"{count} videos, 1 s each at {W}x{H}, {FPS} fps, different props; {os.cpu_count()} cores, "
        f"1-min load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template" / "index.html"
        template.parent.mkdir()
        template.write_text(TEMPLATE)
        out = Path(tmp) / "out"
        out.mkdir()
        cold_s = cold(template, out, count)
        worker_s = in_processes(template, out, count, warm=False)
        warm_s = in_processes(template, out, count, warm=True)
        backend_cold_s = local_backend(template, out, count, warm=False)
        backend_warm_s = local_backend(template, out, count, warm=True)
    print(f"cold CLI (helios render per video):        {cold_s:6.2f} s  ({cold_s / count:.2f} s per video)")
    print(f"cold worker (process + browser per video): {worker_s:6.2f} s  ({worker_s / count:.2f} s per video)")
    print(f"warm (one process, one kept browser):      {warm_s:6.2f} s  ({warm_s / count:.2f} s per video)")
    print(f"cold CLI / warm: {cold_s / warm_s:.2f}x   cold worker / warm: {worker_s / warm_s:.2f}x")
    print(
        f"local backend, --no-warm: {backend_cold_s:6.2f} s   warm workers: {backend_warm_s:6.2f} s   "
        f"ratio {backend_cold_s / backend_warm_s:.2f}x"
    )


if __name__ == "__main__":
    main()
