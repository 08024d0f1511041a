"""<video> elements follow virtual time: seeked and awaited each frame, the same in every chunk."""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np
import pytest

from tests.render.conftest import config, decode, render

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def video_page(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A page whose only content is a VP9 video whose luma is 40 + 5 x its frame number (limited range)."""
    root = tmp_path_factory.mktemp("video")
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=64x48:r=30,geq=lum='40+N*5':cb=128:cr=128",
            "-frames:v",
            "40",
            "-c:v",
            "libvpx-vp9",
            "-lossless",
            "1",
            "-g",
            "1",
            str(root / "ramp.webm"),
        ],
        check=True,
    )
    (root / "index.html").write_text(
        "<!doctype html><html><body style='margin:0;background:#000'>"
        "<div style='height:120px'></div>"
        "<script>setTimeout(() => { const v = document.createElement('video'); v.src = 'ramp.webm';"
        " v.muted = true; v.autoplay = true; v.style.cssText = 'position:absolute;top:0;left:0;"
        "width:320px;height:240px;object-fit:fill'; document.body.appendChild(v); }, 200);</script>"
        "</body></html>"
    )
    return root / "index.html"


def _levels(path: pathlib.Path) -> list[float]:
    """Mean brightness of the middle of each frame (full range gray)."""
    frames = decode(path, 320, 240, pix_fmt="gray")
    return [float(f[60:180, 80:240].mean()) for f in frames]


def _video_frame(level: float) -> float:
    """Which frame of ramp.webm shows this brightness."""
    return (level * 219 / 255 + 16 - 40) / 5


def test_video_time_is_virtual_and_chunk_invariant(tmp_path: pathlib.Path, video_page: pathlib.Path) -> None:
    cfg = config(lossless=True)
    whole, chunk = tmp_path / "whole.mkv", tmp_path / "chunk.mkv"
    render(video_page, whole, 0, 30, cfg)
    render(video_page, chunk, 20, 10, cfg)
    levels = _levels(whole)
    # The video is added by a timer at 200 ms (frame 6), then shows its own frame n - 6 at frame n.
    assert max(levels[:6]) < 3
    shown = [_video_frame(level) for level in levels[6:]]
    assert all(abs(value - expected) < 0.3 for value, expected in zip(shown, range(24), strict=True)), shown
    assert np.allclose(_levels(chunk), levels[20:], atol=0.5)
    a, b = decode(whole, 320, 240), decode(chunk, 320, 240)
    assert np.abs(a[20:].astype(int) - b.astype(int)).max() <= 2
