"""`helios render` on several cores: a range rendered in several browsers at once (lanes capturing interleaved
frames into one encoder) equals a one-browser render."""

from __future__ import annotations

import logging
import pathlib
import threading

import numpy as np
import pytest
from fakes.jobs import wait_no_tagged_processes

import helios_kit.render.parallel as parallel_module
from helios_kit.errors import BrowserFault, RenderError
from helios_kit.render.browser import Browser
from helios_kit.render.page import RenderCancelled
from helios_kit.render.parallel import MIN_FRAMES_PER_PART, auto_parts, render_parallel
from tests.render.conftest import (
    FIXTURES,
    config,
    decode,
    frame_indices,
    leftovers,
    probe,
    process_tag,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.render

FRAME_INDEX = FIXTURES / "frame_index" / "index.html"
CANVAS_INDEX = FIXTURES / "canvas_index" / "index.html"


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each Chromium launched (its begin-frame mode), in order."""
    started: list[bool] = []
    launch = Browser.__init__

    def counted(self: Browser, *args: object, **kwargs: object) -> None:
        started.append(bool(kwargs.get("begin_frame_control", False)))
        launch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Browser, "__init__", counted)
    return started


def parallel(out: pathlib.Path, start: int, count: int, parts: int, cfg=None, page=FRAME_INDEX, **kw):
    return render_parallel(
        cfg or config(),
        input_location=str(page),
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


def test_lanes_far_into_a_range_show_every_frame_in_order(tmp_path: pathlib.Path) -> None:
    """Each lane reaches the range's start in batches, then steps over the other lane's frames."""
    out = tmp_path / "out.mp4"
    parallel(out, 700, 24, parts=2)
    assert frame_indices(decode(out, 320, 240)) == [(n % 256,) * 3 for n in range(700, 724)]


def test_lanes_report_progress_in_order(tmp_path: pathlib.Path) -> None:
    seen: list[tuple[int, int]] = []
    parallel(tmp_path / "out.mp4", 0, 20, parts=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(n, 20) for n in range(1, 21)]


def test_a_lane_that_loses_its_browser_carries_on_in_a_fresh_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, launches: list[bool], caplog: pytest.LogCaptureFixture
) -> None:
    """A browser fault at frame 9 costs that lane one restart (screenshot capture), not the render: the frames
    already delivered stay, the lane's claimed frame is captured again, and the video is exact."""
    choose = parallel_module.choose_capture
    faulted: list[int] = []

    def choose_faulty(*args, **kwargs):
        capture = choose(*args, **kwargs)
        frames = capture.frames

        def frames_or_fault(frame: int, steps_from: int | None = None) -> list[bytes]:
            if frame == 9 and not faulted:
                faulted.append(frame)
                raise BrowserFault("screenshot failed: Chromium produced no picture for frame 9")
            return frames(frame, steps_from)

        capture.frames = frames_or_fault
        return capture

    monkeypatch.setattr(parallel_module, "choose_capture", choose_faulty)
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING, logger="helios.render"):
        parallel(out, 0, 30, parts=2)
    assert faulted == [9]
    assert frame_indices(decode(out, 320, 240)) == [(n, n, n) for n in range(30)]
    assert launches.count(False) == 1 and len(launches) == 3  # two lanes, one restart in screenshot mode
    assert "carries on in a fresh browser" in caplog.text


def test_a_lane_faulting_twice_fails_the_render_retryably(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    choose = parallel_module.choose_capture

    def choose_broken(*args, **kwargs):
        capture = choose(*args, **kwargs)

        def fault(frame: int, steps_from: int | None = None) -> list[bytes]:
            raise BrowserFault(f"screenshot failed at frame {frame}")

        capture.frames = fault
        return capture

    monkeypatch.setattr(parallel_module, "choose_capture", choose_broken)
    out = tmp_path / "out.mp4"
    with pytest.raises(BrowserFault, match="screenshot failed at frame"):
        parallel(out, 0, 30, parts=2)
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_canvas_page_renders_in_one_browser(tmp_path: pathlib.Path, launches: list[bool]) -> None:
    """`auto` capture of a page that is one canvas: its HTML draws on a canvas, so the other lanes wait for
    the first page's verdict, and never start; the one lane captures the canvas directly."""
    out = tmp_path / "out.mp4"
    stats = parallel(out, 0, 20, parts=2, page=CANVAS_INDEX)
    assert stats.capture == "canvas" and len(launches) == 1
    assert [row[0] for row in frame_indices(decode(out, 320, 240), rows=1)] == list(range(20))


def test_cancelling_mid_render_stops_every_lane(tmp_path: pathlib.Path, process_tag: str) -> None:  # noqa: F811
    cancel = threading.Event()

    def progress(done: int, _total: int) -> None:
        if done == 5:
            cancel.set()

    out = tmp_path / "out.mp4"
    with pytest.raises(RenderCancelled):
        parallel(out, 0, 200, parts=2, cancel=cancel, progress=progress)
    assert not out.exists() and leftovers(tmp_path) == []
    assert wait_no_tagged_processes(process_tag, timeout=60) == []  # no browser, no ffmpeg left running


def test_a_profiled_render_in_lanes_reports_every_lane(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HELIOS_PROFILE", "1")
    stats = parallel(tmp_path / "out.mp4", 0, 12, parts=2)
    assert stats.profile is not None and stats.profile.frames == 12
    phases = {phase.name: phase.count for phase in stats.profile.phases}
    assert phases["browser launch + page load"] == 2 and phases["cpu: browser (all processes)"] == 2
    assert phases["page step"] == 12 and phases["cpu: ffmpeg"] == 1
