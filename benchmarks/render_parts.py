"""One `helios render` on both cores: the same range in 1 browser and in N lanes, measured in one run.

Prints wall time, frames/s and the speed-up of N lanes (browsers capturing interleaved frames into one
encoder, `render/parallel.py`) over 1 for each example at 1280x720, 30 fps, at each frame count; the two
are alternated, `--rounds` times, so load on the shared machine hits them alike, and every output is
checked to have its frame count.

    python benchmarks/render_parts.py [--frames 60 150] [--lanes 2] [--rounds 2] [--examples titles ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from helios_kit.render.encode import find_ffmpeg
from helios_kit.render.parallel import render_parallel
from helios_kit.spec import RenderConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def timed(name: str, frames: int, lanes: int, out: Path) -> float:
    config = RenderConfig(input="index.html", width=1280, height=720, fps=30, frame_count=frames)
    started = time.monotonic()
    render_parallel(
        config,
        input_location=str(EXAMPLES / name),
        start_frame=0,
        frame_count=frames,
        output_path=out,
        parts=lanes,
    )
    wall = time.monotonic() - started
    decoded = subprocess.run(
        [find_ffmpeg(), "-v", "error", "-i", str(out), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    got = sum(1 for line in decoded.splitlines() if line and not line.startswith("#"))
    if got != frames:
        raise SystemExit(f"{name}: {got} frames in {out.name}, expected {frames}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 150])
    parser.add_argument("--lanes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--examples", nargs="+", default=["titles", "helios-counter", "particles", "timeline"])
    args = parser.parse_args()
    print(
        f"1280x720, 30 fps; 1 lane vs {args.lanes} lanes, {args.rounds} rounds alternated; {os.cpu_count()} cores, "
        f"1-min load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            for name in args.examples:
                one, many = [], []
                for _ in range(args.rounds):
                    one.append(timed(name, frames, 1, Path(tmp) / f"{name}-1.mp4"))
                    many.append(timed(name, frames, args.lanes, Path(tmp) / f"{name}-n.mp4"))
                a, b = statistics.mean(one), statistics.mean(many)
                print(
                    f"{name:15s} {frames:4d} frames: 1 lane {a:6.2f} s ({frames / a:5.1f} frames/s)   "
                    f"{args.lanes} lanes {b:6.2f} s ({frames / b:5.1f} frames/s)   speed-up {a / b:.2f}x",
                    flush=True,
                )
    print(f"1-min load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
