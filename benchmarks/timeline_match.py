"""Does a chunk of the timeline example match the whole render, run after run, with both cores busy?

    .venv/bin/python benchmarks/timeline_match.py [--runs 50] [--start 60] [--frames 10] [--busy 2]

Renders examples/timeline (30 fps, a VP9 <video>, images, a soundtrack; at 640x360, its stage scaled)
once whole, then the chunk [--start, --start + --frames) `--runs` times with `helios render --start-frame
--frame-count`, each with `--busy` busy-loop processes keeping the cores loaded, and compares the chunk's
frames with the whole render's exactly: both are encoded losslessly (libx264rgb, crf 0, rgb24), so a
decoded frame is the captured image and equality is bit for bit. Prints each run's verdict, then N of
runs matched, the failures (the frames that differ, their PSNR against the whole render's frame and the
box holding the differing pixels) and the seconds per run.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from stress_support import busy_cores

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "timeline" / "index.html"
HELIOS = [sys.executable, "-m", "helios_kit.cli"]
LOSSLESS = ["--video-codec", "libx264rgb", "--pixel-format", "rgb24", "--crf", "0"]


#: Render size: the example scales its 1280x720 stage to the viewport; smaller keeps a run short under load.
W, H = 640, 360


def render(out: pathlib.Path, start: int | None = None, frames: int | None = None) -> None:
    command = [*HELIOS, "render", str(EXAMPLE), "-o", str(out), *LOSSLESS, "--width", str(W), "--height", str(H)]
    if start is not None:
        command += ["--start-frame", str(start), "--frame-count", str(frames)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])


def decode(path: pathlib.Path) -> np.ndarray:
    # passthrough: one raw frame per stored frame (a constant-rate conversion of Matroska's 1 ms
    # timestamps duplicates frames, which would look like a mismatch).
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def where(a: np.ndarray, b: np.ndarray) -> str:
    """The box (x0,y0)-(x1,y1) holding every differing pixel."""
    ys, xs = np.nonzero(np.any(a != b, axis=2))
    return f"({xs.min()},{ys.min()})-({xs.max()},{ys.max()})"


def compare(whole: np.ndarray, chunk: np.ndarray, start: int) -> list[str]:
    """The differing frames of a chunk (empty when it matches exactly)."""
    if len(chunk) != len(whole[start : start + len(chunk)]):
        return [f"{len(chunk)} frames decoded"]
    return [
        f"frame {start + k} PSNR {psnr(frame, whole[start + k]):.1f} dB in {where(frame, whole[start + k])}"
        for k, frame in enumerate(chunk)
        if not np.array_equal(frame, whole[start + k])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--start", type=int, default=60)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--busy", type=int, default=2)
    args = parser.parse_args()
    matched, failures, seconds = 0, [], []
    with busy_cores(args.busy), tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        render(pathlib.Path(tmp) / "whole.mkv")
        whole = decode(pathlib.Path(tmp) / "whole.mkv")
        print(f"whole render: {len(whole)} frames in {time.monotonic() - began:.1f} s", flush=True)
        for run in range(1, args.runs + 1):
            out = pathlib.Path(tmp) / f"chunk{run}.mkv"
            began = time.monotonic()
            try:
                render(out, args.start, args.frames)
                differences = compare(whole, decode(out), args.start)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                differences = [f"render failed: {error}"]
            seconds.append(time.monotonic() - began)
            matched += not differences
            if differences:
                failures.append(f"run {run}: " + "; ".join(differences))
            print(f"run {run}: {'match' if not differences else 'MISMATCH ' + '; '.join(differences)}", flush=True)
    print(f"chunk [{args.start}, {args.start + args.frames}) matched the whole render {matched} of {args.runs} times")
    for failure in failures:
        print("  " + failure)
    if seconds:
        print(f"seconds per run: mean {sum(seconds) / len(seconds):.1f}, max {max(seconds):.1f}")
    print("command: " + " ".join([pathlib.Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
