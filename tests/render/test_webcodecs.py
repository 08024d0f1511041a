"""HELIOS_CANVAS_WEBCODECS=1: canvas frames encoded in the page (VideoEncoder, H.264) and muxed by stream copy
show the same frames as the image path: every frame once, chunks joining by stream copy, colours within the
PSNR the other render tests require."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from helios_kit.render.webcodecs import bitrate_for, wanted

from .conftest import FIXTURES, concat, config, decode, frame_indices, probe, psnr, render

CANVAS_INDEX = FIXTURES / "canvas_index" / "index.html"

COLOURS = """<!doctype html>
<html><head><style>html,body{margin:0;background:#123;overflow:hidden}canvas{display:block}</style></head>
<body><canvas id="c"></canvas><script>
  const c = document.getElementById("c"), g = c.getContext("2d");
  c.width = innerWidth; c.height = innerHeight;
  function draw(ms) {
    const t = ms / 1000;
    const grad = g.createLinearGradient(0, 0, c.width, c.height);
    grad.addColorStop(0, `hsl(${(t * 90) % 360}, 80%, 55%)`);
    grad.addColorStop(1, `hsl(${(t * 90 + 150) % 360}, 70%, 35%)`);
    g.fillStyle = grad; g.fillRect(0, 0, c.width, c.height);
    g.fillStyle = "#fc3"; g.beginPath(); g.arc(20 + t * 60, 60, 18, 0, 7); g.fill();
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
</script></body></html>
"""


@pytest.fixture
def webcodecs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_CANVAS_WEBCODECS", "1")


def _indices(path: pathlib.Path) -> list[int]:
    return [row[0] for row in frame_indices(decode(path, 160, 120), rows=1)]


def test_only_lossy_h264_yuv420p_settings_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_CANVAS_WEBCODECS", "1")
    assert wanted("libx264", "yuv420p", lossless=False)
    assert not wanted("libx264", "yuv420p", lossless=True)
    assert not wanted("libvpx-vp9", "yuv420p", lossless=False)
    assert not wanted("libx264", "yuv444p", lossless=False)
    monkeypatch.setenv("HELIOS_CANVAS_WEBCODECS", "0")
    assert not wanted("libx264", "yuv420p", lossless=False)
    assert bitrate_for(1280, 720, 30) == int(1280 * 720 * 30 * 0.4) and bitrate_for(160, 120, 30) == 1_000_000


def test_every_frame_once_and_chunks_join_by_stream_copy(tmp_path: pathlib.Path, webcodecs: None) -> None:
    whole_path = tmp_path / "whole.mp4"
    whole = render(CANVAS_INDEX, whole_path, 0, 20, config(160, 120))
    assert whole.capture == "canvas"
    info = probe(whole_path)
    assert int(info["nb_read_frames"]) == 20 and info["r_frame_rate"] == "30/1" and info["codec_name"] == "h264"
    assert _indices(whole_path) == list(range(20))
    first, second = tmp_path / "c0.mp4", tmp_path / "c1.mp4"
    render(CANVAS_INDEX, first, 0, 9, config(160, 120))
    render(CANVAS_INDEX, second, 9, 11, config(160, 120))
    joined = concat([first, second], tmp_path / "joined.mp4")
    assert _indices(second) == list(range(9, 20))
    assert _indices(joined) == list(range(20))
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_matches_the_image_path_within_psnr(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "colours" / "index.html"
    page.parent.mkdir()
    page.write_text(COLOURS)
    reference = render(page, tmp_path / "images.mp4", 0, 12, config(160, 120))
    monkeypatch.setenv("HELIOS_CANVAS_WEBCODECS", "1")
    monkeypatch.setenv("HELIOS_PROFILE", "1")
    encoded = render(page, tmp_path / "encoded.mp4", 0, 12, config(160, 120))
    assert reference.capture == encoded.capture == "canvas"
    assert encoded.profile is not None
    assert "page step + VideoEncoder" in {phase.name for phase in encoded.profile.phases}
    a, b = decode(tmp_path / "images.mp4", 160, 120), decode(tmp_path / "encoded.mp4", 160, 120)
    assert a.shape == b.shape == (12, 120, 160, 3)
    worst = min(psnr(x, y) for x, y in zip(a, b, strict=True))
    print(f"worst PSNR in-page H.264 vs image path: {worst:.1f} dB")
    assert worst >= 40, f"worst PSNR {worst:.1f} dB between in-page H.264 and the image path"
    assert not np.array_equal(a[0], a[-1])  # the scene moves: a stuck frame could not pass
