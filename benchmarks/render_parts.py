"""One `helios render` on both cores: the same range rendered as 1 part and as N parts, measured in one run.

Prints wall time, frames/s and the speed-up of N parts over 1 for each example at 1280x720, 30 fps.
Usage: python benchmarks/render_parts.py [frames] [parts]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from helios_kit.render.parallel import render_parallel
from helios_kit.spec import RenderConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def timed(name: str, frames: int, parts: int, out: Path) -> float:
    config = RenderConfig(input="index.html", width=1280, height=720, fps=30, frame_count=frames)
    started = time.monotonic()
    render_parallel(
        config,
        input_location=str(EXAMPLES / name),
        start_frame=0,
        frame_count=frames,
        output_path=out,
        parts=parts,
    )
    return time.monotonic() - started


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    parts = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 2)
    print(
        f"{frames} frames at 1280x720, 30 fps; 1 part vs {parts} parts; {os.cpu_count()} cores, "
        f"1-min load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("titles", "particles", "timeline"):
            one = timed(name, frames, 1, Path(tmp) / f"{name}-1.mp4")
            many = timed(name, frames, parts, Path(tmp) / f"{name}-{parts}.mp4")
            print(
                f"{name:10s} 1 part {one:6.2f} s ({frames / one:5.1f} frames/s)   "
                f"{parts} parts {many:6.2f} s ({frames / many:5.1f} frames/s)   speed-up {one / many:.2f}x"
            )


if __name__ == "__main__":
    main()
