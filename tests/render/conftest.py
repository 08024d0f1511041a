"""Shared helpers for renderer tests: render a range, decode outputs with ffmpeg, compare frames."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import uuid

import numpy as np
import pytest
from fakes.jobs import tagged_processes as tagged_commands

from helios_kit.render import render_range
from helios_kit.render.session import RenderStats
from helios_kit.spec import RenderConfig

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def config(width: int = 320, height: int = 240, fps: float = 30, lossless: bool = False, **kw) -> RenderConfig:
    if lossless:
        kw.setdefault("video_codec", "libx264rgb")
        kw.setdefault("pixel_format", "rgb24")
        kw.setdefault("crf", 0)
    return RenderConfig(input="index.html", width=width, height=height, fps=fps, frame_count=1, **kw)


def render(
    input_location: str | os.PathLike[str],
    out: pathlib.Path,
    start: int,
    count: int,
    cfg: RenderConfig | None = None,
    **kw,
) -> RenderStats:
    return render_range(
        cfg or config(),
        input_location=str(input_location),
        start_frame=start,
        frame_count=count,
        output_path=out,
        **kw,
    )


def decode(path: pathlib.Path, width: int, height: int, pix_fmt: str = "rgb24") -> np.ndarray:
    """All frames of a video as an array (frames, height, width, channels)."""
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
        capture_output=True,
        check=True,
    ).stdout
    channels = 1 if pix_fmt == "gray" else 3
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, channels)


def frame_indices(frames: np.ndarray, rows: int = 3, bits: int = 8) -> list[tuple[int, ...]]:
    """Read the binary frame index painted by fixtures/frame_index (one value per row)."""
    _, height, width, _ = frames.shape
    out = []
    for frame in frames:
        values = []
        for row in range(rows):
            y = int((row + 0.5) * height / rows)
            value = 0
            for bit in range(bits):
                x = int((bit + 0.5) * width / bits)
                value = value * 2 + (1 if frame[y, x].mean() > 128 else 0)
            values.append(value)
        out.append(tuple(values))
    return out


def probe(path: pathlib.Path) -> dict:
    """Video stream facts: codec, size, frame rate, pixel format, counted frames."""
    text = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,pix_fmt,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return json.loads(text)["streams"][0]


def concat(paths: list[pathlib.Path], out: pathlib.Path) -> pathlib.Path:
    """Join chunk files with ffmpeg's concat demuxer, stream copy (what `helios merge` does)."""
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in paths))
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)],
        check=True,
    )
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def leftovers(directory: pathlib.Path) -> list[str]:
    """Temporary files a render must never leave behind."""
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name or p.name.startswith("."))


@pytest.fixture
def process_tag(monkeypatch: pytest.MonkeyPatch) -> str:
    """An env marker inherited by every process the render starts, to find survivors afterwards."""
    tag = f"helios-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("HELIOS_TEST_PROCESS_TAG", tag)
    return tag


def tagged_processes(tag: str) -> list[int]:
    """Live (non-zombie) processes other than this one whose environment carries `tag`."""
    return [pid for pid, _command in tagged_commands(tag)]
