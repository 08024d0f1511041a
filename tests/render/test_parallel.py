"""`helios render` on several cores: a range rendered as parts at once equals a one-part render."""

from __future__ import annotations

import pathlib
import threading

import numpy as np
import pytest

from helios_kit.errors import RenderError
from helios_kit.render.parallel import MIN_FRAMES_PER_PART, auto_parts, render_parallel
from tests.render.conftest import FIXTURES, config, decode, frame_indices, leftovers, probe

pytestmark = pytest.mark.render

FRAME_INDEX = FIXTURES / "frame_index" / "index.html"


def parallel(out: pathlib.Path, start: int, count: int, parts: int, cfg=None, **kw):
    return render_parallel(
        cfg or config(),
        input_location=str(FRAME_INDEX),
        start_frame=start,
        frame_count=count,
        output_path=out,
        parts=parts,
        **kw,
    )


def test_parts_show_every_frame_once_in_order(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out.mp4"
    stats = parallel(out, 7, 50, parts=3)
    assert stats.frames == 50
    assert frame_indices(decode(out, 320, 240)) == [(n, n, n) for n in range(7, 57)]
    info = probe(out)
    assert int(info["nb_read_frames"]) == 50 and info["r_frame_rate"] == "30/1"
    assert leftovers(tmp_path) == []  # the parts' folder is gone


def test_lossless_parts_equal_one_part_pixel_for_pixel(tmp_path: pathlib.Path) -> None:
    cfg = config(lossless=True)
    one, three = tmp_path / "one.mkv", tmp_path / "three.mkv"
    parallel(one, 0, 30, parts=1, cfg=cfg)
    parallel(three, 0, 30, parts=3, cfg=cfg)
    assert np.array_equal(decode(one, 320, 240), decode(three, 320, 240))


def test_a_failing_part_fails_the_render_and_leaves_nothing(tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "comp"
    broken.mkdir()
    (broken / "index.html").write_text(
        "<script>requestAnimationFrame(function tick(t) {"
        " if (t >= 1000) throw new Error('boom at one second'); requestAnimationFrame(tick); });</script>"
    )
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError, match="boom at one second"):
        render_parallel(config(), input_location=str(broken), start_frame=0, frame_count=60, output_path=out, parts=2)
    assert not out.exists() and leftovers(tmp_path) == []


def test_cancel_stops_every_part(tmp_path: pathlib.Path) -> None:
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError):
        parallel(out, 0, 40, parts=2, cancel=cancel)
    assert not out.exists()


def test_auto_parts_only_split_long_renders() -> None:
    assert auto_parts(30, cpus=2) == 1
    assert auto_parts(2 * MIN_FRAMES_PER_PART, cpus=2) == 2
    assert auto_parts(10_000, cpus=2) == 2
    assert auto_parts(10_000, cpus=1) == 1
    assert auto_parts(10_000, cpus=2, capture="canvas") == 1


def test_auto_parts_keep_a_composition_with_video_in_one_part(tmp_path: pathlib.Path) -> None:
    """A <video> page renders in the full browser through screenshots, which alone keeps both cores busy."""
    (tmp_path / "video.html").write_text('<!doctype html><video src="clip.webm" muted></video>')
    (tmp_path / "text.html").write_text("<!doctype html><p>titles</p>")
    assert auto_parts(10_000, cpus=2, input_location=str(tmp_path / "video.html")) == 1
    assert auto_parts(10_000, cpus=2, input_location=str(tmp_path / "text.html")) == 2
    assert auto_parts(10_000, cpus=2, input_location="http://127.0.0.1:9/index.html") == 2  # not read: unknown
