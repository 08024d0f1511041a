"""Accuracy of `helios job estimate` (local): predicted wall time vs an actual `helios job run`.

    .venv/bin/python benchmarks/estimate_accuracy.py [--runs 3] [--frames 96] [--chunks 4] [--width 1280 --height 720]

Plans a job of an animated 720p composition (CSS animations, text, a gradient) in 4 chunks, then per run:
estimate it (samples rendered here, as `helios job estimate` does), time `helios job run --force -q` in a
fresh process, and print actual / estimate. Goal: every ratio within 0.6-1.6. Not a test: it times things.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_kit.commands.estimate import estimate_source  # noqa: E402
from helios_kit.planner import plan_job  # noqa: E402
from helios_kit.spec import RenderConfig, dump  # noqa: E402

HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; width: 100%; height: 100%; overflow: hidden;
  background: linear-gradient(135deg, #1d2b64, #f8cdda); font-family: sans-serif; }
.box { position: absolute; width: 160px; height: 160px; border-radius: 24px; background: #fff8;
  animation: move 3s linear infinite alternate; }
h1 { position: absolute; top: 40%; width: 100%; text-align: center; color: white; font-size: 96px;
  animation: pulse 1.5s ease-in-out infinite alternate; }
@keyframes move { from { transform: translate(0, 0) rotate(0deg); }
  to { transform: translate(1000px, 500px) rotate(360deg); } }
@keyframes pulse { from { opacity: 0.3; letter-spacing: 0; } to { opacity: 1; letter-spacing: 12px; } }
</style></head><body><h1>helios estimate</h1>
<div class="box" style="left: 20px; top: 20px"></div>
<div class="box" style="left: 300px; top: 60px; animation-duration: 2s"></div>
<div class="box" style="left: 600px; top: 10px; animation-duration: 4s"></div>
</body></html>
"""


def make_job(folder: pathlib.Path, frames: int, chunks: int, width: int, height: int) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(HTML)
    config = RenderConfig(input="index.html", width=width, height=height, fps=30, frame_count=frames)
    path = folder / "job.json"
    dump(plan_job(config, concurrency=chunks, job_id="estimate-accuracy"), path)
    return path


def actual_run_s(job: pathlib.Path, home: pathlib.Path) -> float:
    env = dict(os.environ, HELIOS_HOME=str(home))
    env.pop("HELIOS_WORKER_RENDER", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--force", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"run failed: {result.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="helios-estimate-bench-") as tmp:
        job = make_job(pathlib.Path(tmp) / "job", args.frames, args.chunks, args.width, args.height)
        print(f"job: {args.frames} frames, {args.chunks} chunks, {args.width}x{args.height}, {os.cpu_count()} CPUs")
        ratios = []
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            estimate = estimate_source(str(job))
            took = time.monotonic() - started
            actual = actual_run_s(job, pathlib.Path(tmp) / "home")
            ratio = actual / estimate.wall_seconds
            ratios.append(ratio)
            print(
                f"run {run}: estimate {estimate.wall_seconds:.1f} s (sampling took {took:.1f} s, "
                f"{estimate.frames_per_second:.1f} frames/s per render), actual {actual:.1f} s, "
                f"ratio actual/estimate {ratio:.2f}"
            )
        inside = sum(0.6 <= r <= 1.6 for r in ratios)
        print(f"ratios: {', '.join(f'{r:.2f}' for r in ratios)}; {inside}/{len(ratios)} within 0.6-1.6")


if __name__ == "__main__":
    main()
