"""Chunk invariance on real animation libraries: a chunk starting mid-way equals the whole render."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tests.render.conftest import FIXTURES, config, decode, psnr, render

pytestmark = pytest.mark.render

TOTAL, SPLIT = 45, 26


@pytest.mark.parametrize(
    ("fixture", "capture"),
    [
        ("lib_gsap.html", "dom"),
        ("lib_anime.html", "dom"),
        ("lib_three.html", "canvas"),
        ("lib_chart.html", "canvas"),
        ("css_transitions.html", "dom"),
    ],
)
def test_chunk_matches_whole_render(tmp_path: pathlib.Path, fixture: str, capture: str) -> None:
    cfg = config(lossless=True)
    whole, chunk = tmp_path / "whole.mkv", tmp_path / "chunk.mkv"
    stats = render(FIXTURES / fixture, whole, 0, TOTAL, cfg)
    assert stats.capture == capture
    render(FIXTURES / fixture, chunk, SPLIT, TOTAL - SPLIT, cfg)
    a, b = decode(whole, 320, 240), decode(chunk, 320, 240)
    assert a.shape[0] == TOTAL and b.shape[0] == TOTAL - SPLIT
    worst = min(psnr(x, y) for x, y in zip(a[SPLIT:], b, strict=True))
    assert worst >= 40, f"{fixture}: worst PSNR {worst:.1f} dB between chunk and whole render"
    # The video actually moves: consecutive frames differ, and the chunk is not a still.
    moving = sum(not np.array_equal(a[i], a[i + 1]) for i in range(TOTAL - 1))
    assert moving >= TOTAL // 2, f"{fixture}: only {moving} of {TOTAL - 1} frame steps change pixels"
    assert not np.array_equal(b[0], b[-1])


def test_canvas_capture_matches_dom_capture(tmp_path: pathlib.Path) -> None:
    """The canvas path composites over the page background, so it looks like a screenshot."""
    cfg_canvas, cfg_dom = config(lossless=True, capture="canvas"), config(lossless=True, capture="dom")
    a_path, b_path = tmp_path / "canvas.mkv", tmp_path / "dom.mkv"
    render(FIXTURES / "lib_chart.html", a_path, 20, 5, cfg_canvas)
    render(FIXTURES / "lib_chart.html", b_path, 20, 5, cfg_dom)
    a, b = decode(a_path, 320, 240), decode(b_path, 320, 240)
    assert min(psnr(x, y) for x, y in zip(a, b, strict=True)) >= 40


def test_stateless_canvas_skips_drawing_while_fast_forwarding_and_matches(tmp_path: pathlib.Path) -> None:
    cfg = config(lossless=True)
    whole, chunk = tmp_path / "whole.mkv", tmp_path / "chunk.mkv"
    render(FIXTURES / "canvas_stateless.html", whole, 0, 40, cfg)
    stats = render(FIXTURES / "canvas_stateless.html", chunk, 300, 4, cfg)
    stats_whole_again = render(FIXTURES / "canvas_stateless.html", tmp_path / "w2.mkv", 296, 8, cfg)
    a = decode(tmp_path / "w2.mkv", 320, 240)
    b = decode(chunk, 320, 240)
    assert min(psnr(x, y) for x, y in zip(a[4:], b, strict=True)) == float("inf")
    # Skipping the drawing makes reaching frame 300 cheap (the page only runs its math).
    assert stats.fast_forward_ms < 10_000 and stats_whole_again.frames == 8
    assert not np.array_equal(decode(whole, 320, 240)[0], decode(whole, 320, 240)[-1])
