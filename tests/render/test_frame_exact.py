"""Frame exactness: frame n shows index n whether rendered whole or in chunks, with any capture."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

from tests.render.conftest import FIXTURES, concat, config, decode, frame_indices, probe, render

pytestmark = pytest.mark.render

FRAME_INDEX = FIXTURES / "frame_index" / "index.html"
CANVAS_INDEX = FIXTURES / "canvas_index" / "index.html"


def _expect(indices: list[tuple[int, ...]], start: int, stop: int) -> None:
    expected = [(n, n, n) for n in range(start, stop)]
    assert indices == expected


def test_whole_and_chunked_renders_show_every_frame_once(tmp_path: pathlib.Path) -> None:
    whole = tmp_path / "whole.mp4"
    first, second = tmp_path / "c0.mp4", tmp_path / "c1.mp4"
    render(FRAME_INDEX, whole, 0, 60)
    render(FRAME_INDEX, first, 0, 23)
    render(FRAME_INDEX, second, 23, 37)
    _expect(frame_indices(decode(whole, 320, 240)), 0, 60)
    _expect(frame_indices(decode(first, 320, 240)) + frame_indices(decode(second, 320, 240)), 0, 60)
    merged = concat([first, second], tmp_path / "merged.mp4")
    _expect(frame_indices(decode(merged, 320, 240)), 0, 60)
    info = probe(merged)
    assert int(info["nb_read_frames"]) == 60
    assert info["r_frame_rate"] == "30/1"


def test_output_has_exact_frame_count_fps_and_size(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out.mp4"
    stats = render(FRAME_INDEX.parent, out, 5, 17, config(width=256, height=144, fps=24))
    info = probe(out)
    assert (info["width"], info["height"]) == (256, 144)
    assert info["r_frame_rate"] == "24/1" and info["avg_frame_rate"] == "24/1"
    assert int(info["nb_read_frames"]) == 17
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert stats.frames == 17 and stats.output_path == str(out)


def test_lossless_chunk_pixels_equal_whole_render(tmp_path: pathlib.Path) -> None:
    cfg = config(lossless=True)
    whole, chunk = tmp_path / "whole.mkv", tmp_path / "chunk.mkv"
    render(FRAME_INDEX, whole, 0, 40, cfg)
    render(FRAME_INDEX, chunk, 23, 17, cfg)
    a, b = decode(whole, 320, 240), decode(chunk, 320, 240)
    assert a.shape[0] == 40 and b.shape[0] == 17
    assert np.array_equal(a[23:], b)
    _expect(frame_indices(a), 0, 40)


@pytest.mark.parametrize(
    ("browser", "begin_frame"),
    [("chromium-headless-shell", "1"), ("chromium-headless-shell", "0"), ("chromium", "1")],
    ids=["shell-beginframe", "shell-screenshot", "chromium-new-headless"],
)
def test_every_browser_mode_is_frame_exact_from_frame_zero(
    tmp_path: pathlib.Path, browser: str, begin_frame: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame 0 is not a stale compositor frame, and a chunk agrees, in each capture path."""
    path = shutil.which(browser)
    if path is None:
        pytest.skip(f"{browser} not installed")
    monkeypatch.setenv("HELIOS_CHROMIUM", path)
    monkeypatch.setenv("HELIOS_BEGIN_FRAME", begin_frame)
    zero, chunk = tmp_path / "zero.mp4", tmp_path / "chunk.mp4"
    stats = render(FRAME_INDEX, zero, 0, 3)
    assert stats.browser == path
    _expect(frame_indices(decode(zero, 320, 240)), 0, 3)
    render(FRAME_INDEX, chunk, 40, 4)
    _expect(frame_indices(decode(chunk, 320, 240)), 40, 44)


@pytest.mark.parametrize("pipeline", ["1", "0"], ids=["worker-pipelined", "synchronous"])
def test_canvas_capture_is_frame_exact_and_auto_picks_it(
    tmp_path: pathlib.Path, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOS_CANVAS_PIPELINE", pipeline)
    whole, chunk = tmp_path / "whole.mp4", tmp_path / "chunk.mp4"
    stats = render(CANVAS_INDEX, whole, 0, 30)
    assert stats.capture == "canvas"
    render(CANVAS_INDEX, chunk, 17, 13)
    indices = [row[:1] for row in frame_indices(decode(whole, 320, 240), rows=1)]
    assert indices == [(n,) for n in range(30)]
    chunk_indices = [row[:1] for row in frame_indices(decode(chunk, 320, 240), rows=1)]
    assert chunk_indices == [(n,) for n in range(17, 30)]


def test_dom_capture_forced_on_canvas_page_agrees(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "dom.mp4"
    stats = render(CANVAS_INDEX, out, 3, 5, config(capture="dom"))
    assert stats.capture == "dom"
    assert [r[:1] for r in frame_indices(decode(out, 320, 240), rows=1)] == [(n,) for n in range(3, 8)]


def test_non_integer_fps_keeps_exact_count_and_rate(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "ntsc.mp4"
    render(FRAME_INDEX, out, 10, 12, config(fps=29.97))
    info = probe(out)
    assert int(info["nb_read_frames"]) == 12
    assert info["r_frame_rate"] == "2997/100"


def test_image_added_later_is_decoded_before_its_first_frame(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "late.mp4"
    render(FIXTURES / "late_assets.html", out, 0, 12)
    brightness = [float(f.mean()) for f in decode(out, 320, 240)]
    assert max(brightness[:9]) < 10
    assert min(brightness[9:]) > 245
