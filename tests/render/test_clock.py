"""The virtual-time contract, observed from inside a real page: clocks, timers, rAF, animations, fast-forward."""

from __future__ import annotations

import pytest

from helios_kit.render import clock
from helios_kit.render.browser import Browser
from helios_kit.render.capture import run_step
from helios_kit.render.server import CompositionServer
from helios_kit.render.session import open_page
from tests.render.conftest import FIXTURES, config

pytestmark = pytest.mark.render

FPS = 20  # 50 ms a frame


@pytest.fixture
def opener():
    """Opens fresh pages (default: the clock probe) at t = 0 in one browser."""
    cfg = config(fps=FPS)
    with CompositionServer(FIXTURES) as server, Browser() as browser:
        yield lambda name="clock_probe.html": open_page(browser, server.url_for(FIXTURES / name), cfg, 30, None)


def opener_for(opener, name: str):
    return opener(name)


@pytest.fixture
def page(opener):
    return opener()


def _step_to(page, frame: int) -> None:
    _step_to_from(page, 0, frame)


def _step_to_from(page, first: int, last: int) -> None:
    for n in range(first, last + 1):
        run_step(page, clock.step_expression(n), n, 30)


def test_timers_raf_and_clocks_follow_virtual_time(page) -> None:
    _step_to(page, 4)  # t = 0, 50, ..., 200 ms
    log = page.evaluate("window.log")
    timers = [entry for entry in log if entry[0] != "raf"]
    assert timers == [
        ["timeout0", 0],
        ["idle", 0],
        ["interval40", 40],
        ["timeout50", 50, clock.EPOCH_MS + 50],
        ["interval40", 80],
        ["timeout100", 100],
        ["nested+10", 110],
        ["interval40", 120],
    ]
    rafs = [entry for entry in log if entry[0] == "raf"]
    # Once per frame, timestamp = performance.now() = document.timeline.currentTime = frame time.
    assert rafs == [["raf", t, t, t] for t in (0, 50, 100, 150)]


def test_animation_created_later_is_offset_by_its_creation_time(page) -> None:
    _step_to(page, 7)  # t = 350 ms; the animation was created by the 100 ms timer
    assert page.evaluate("window.anim.currentTime") == pytest.approx(250)
    assert page.evaluate("getComputedStyle(document.getElementById('box')).opacity") == pytest.approx("0.25", abs=0)


def test_fast_forward_reaches_the_same_state_as_stepping(opener) -> None:
    probe = "JSON.stringify([window.log, window.anim.currentTime])"
    fast = opener()
    run_step(fast, clock.fast_forward_expression(0, 7), 0, 30)
    run_step(fast, clock.step_expression(7), 7, 30)
    slow = opener()
    _step_to(slow, 7)
    assert fast.evaluate(probe) == slow.evaluate(probe)
    assert len(slow.evaluate("window.log")) > 10


def test_virtual_time_never_goes_back(page) -> None:
    _step_to(page, 3)
    with pytest.raises(Exception, match="only moves forward"):
        run_step(page, clock.step_expression(1), 1, 30)


def test_page_controlled_animations_follow_virtual_time(opener) -> None:
    page = opener_for(opener, "waapi_control.html")
    _step_to(page, 12)  # t = 600 ms
    local = page.evaluate("[a.currentTime, b.currentTime, c.currentTime]")
    assert local == pytest.approx([400, 400, 500])
    # c finished at 500 ms (frame 10): event and promise, in virtual time, once.
    assert page.evaluate("seen") == [["c.onfinish", 500], ["c.finished", 500]]
    _step_to_from(page, 13, 16)  # t = 800 ms
    assert page.evaluate("[a.currentTime, b.currentTime, c.currentTime]") == pytest.approx([500, 500, 100])
    assert page.evaluate("seen.length") == 2


def test_css_end_events_fire_in_virtual_time(opener) -> None:
    page = opener("css_events.html")
    _step_to(page, 5)  # t = 250 ms: nothing ended yet
    assert page.evaluate("seen") == []
    _step_to_from(page, 6, 10)  # t = 500 ms
    seen = page.evaluate("seen")
    assert ["transitionend", "width", 300] in seen and ["animationend", "grow", 300] in seen
    assert len(seen) == 2


def test_css_start_iteration_and_run_events_fire_in_virtual_time(opener) -> None:
    """The browser's own CSS events for paused, seeked animations arrive whenever Chromium next updates them
    (a frame late, or twice); the page sees only virtual-time ones, at the frame that crosses each boundary,
    the same however the frames are reached (fast-forward included)."""
    expected = [
        ["animationstart", "pulse", 100, 0],
        ["transitionrun", "width", 100, 0],
        ["transitionstart", "width", 150, 0],
        ["animationiteration", "pulse", 300, 0.2],
        ["transitionend", "width", 350, 0.2],
        ["animationiteration", "pulse", 500, 0.4],
        ["animationend", "pulse", 700, 0.6],
    ]
    rounded = "seen.map(([type, name, t, elapsed]) => [type, name, Math.round(t), Math.round(elapsed * 1000)])"
    expected = [[type, name, t, round(elapsed * 1000)] for type, name, t, elapsed in expected]
    stepped = opener("css_progress_events.html")
    _step_to(stepped, 16)
    assert stepped.evaluate(rounded) == expected
    forwarded = opener("css_progress_events.html")
    run_step(forwarded, clock.fast_forward_expression(0, 16), 0, 30)
    _step_to_from(forwarded, 16, 16)
    assert forwarded.evaluate(rounded) == expected


def test_update_playback_rate_and_reverse_follow_virtual_time(opener) -> None:
    expected = {2: 100, 4: 200, 6: 400, 8: 600, 10: 400, 12: 200, 13: 100}  # frame -> local ms, 50 ms a frame
    page = opener("waapi_rate.html")
    seen = {}
    for frame in range(15):
        _step_to_from(page, frame, frame)
        if frame in expected:
            seen[frame] = round(page.evaluate("anim.currentTime"))
    assert seen == expected
    assert page.evaluate("rates") == [2, -2]
    assert page.evaluate("finishedAt") == [700, 0]  # at its start, the frame it got there
    forwarded = opener("waapi_rate.html")
    run_step(forwarded, clock.fast_forward_expression(0, 12), 0, 30)
    _step_to_from(forwarded, 12, 12)
    assert round(forwarded.evaluate("anim.currentTime")) == 200  # the same state however the frame is reached
