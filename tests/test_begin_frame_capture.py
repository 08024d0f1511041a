"""Begin-frame capture never hands back a stale or duplicated picture, and a frame without one fails its
render retryably (helios_kit/render/capture.py BeginFrameCapture, helios_kit/render/browser.py Page.pump)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fakes.jobs import FRAME_INDEX_HTML
from fakes.renders import decode_frame_indexes

from helios_kit.errors import BrowserFault
from helios_kit.render import capture as capture_module
from helios_kit.render.capture import PICTURE_ATTEMPTS, BeginFrameCapture
from helios_kit.render.session import _render_once
from helios_kit.spec import RenderConfig

W, H = 160, 120


class FakePage:
    """Answers begin frames from a script of results; records what was asked."""

    width, height, begin_frame_control = W, H, True

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[dict[str, Any] | None] = []

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        return {}

    def begin_frame(self, screenshot: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        self.asked.append(screenshot)
        return self.answers.pop(0)


def _picture(text: str) -> dict[str, Any]:
    return {"hasDamage": True, "screenshotData": base64.b64encode(text.encode()).decode()}


def _capture(answers: list[dict[str, Any]]) -> tuple[BeginFrameCapture, FakePage]:
    page = FakePage(answers)
    return BeginFrameCapture(page, "jpeg", 5.0), page  # type: ignore[arg-type]


def test_a_frame_without_damage_is_the_last_drawn_picture_which_every_drawn_frame_carries() -> None:
    capture, page = _capture([_picture("zero"), {"hasDamage": False}])
    assert capture.frame(0) == b"zero"
    assert capture.frame(1) == b"zero"  # nothing changed since the last drawn frame, whose picture we hold
    assert all(shot is not None for shot in page.asked)  # every drawing frame asked for its picture


def test_damage_without_a_picture_is_retried_then_fails_retryably() -> None:
    capture, _ = _capture([_picture("zero"), {"hasDamage": True}, _picture("one")])
    assert capture.frame(0) == b"zero"
    assert capture.frame(1) == b"one"  # the frame with damage but no data was not answered with "zero"

    capture, page = _capture([{"hasDamage": True}] * PICTURE_ATTEMPTS)
    with pytest.raises(BrowserFault, match="no picture for frame 0") as raised:
        capture.frame(0)
    assert raised.value.retryable and len(page.asked) == PICTURE_ATTEMPTS


def test_no_picture_yet_and_no_damage_is_not_a_picture() -> None:
    capture, _ = _capture([{"hasDamage": False}] * PICTURE_ATTEMPTS)
    with pytest.raises(BrowserFault):
        capture.frame(0)


def test_a_stale_video_picture_is_drawn_again_until_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "run_step", lambda *args: {"videoSeeks": 1, "videoCheck": 1})
    verdicts = iter([False, False, True])  # the page's check of each captured image (checkVideoShot)
    monkeypatch.setattr(capture_module, "video_fresh", lambda *args: next(verdicts))
    capture, page = _capture([_picture("stale"), {"hasDamage": False}, _picture("fresh")])
    # neither the stale picture nor the unchanged frame after it is handed back
    assert capture.frame(0) == b"fresh"
    assert len(page.asked) == 3 and all(shot is not None for shot in page.asked)


#: Each frame's step takes real time (a busy rAF callback), so frames are produced while the page is busy
#: (Page.pump). Whatever those frames do, the captured picture must be the step's own frame, never the one
#: before it.
SLOW_STEPS_HTML = FRAME_INDEX_HTML.replace(
    "function paint() {",
    "function paint() {\n  let x = 0;\n  for (let i = 0; i < 2e7; i++) x += Math.sqrt(i);\n  window.__sink = x;",
)


@pytest.mark.render
def test_slow_steps_capture_every_frame_exactly(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(SLOW_STEPS_HTML)
    config = RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=10)
    _render_once(
        config,
        begin_frame=True,  # no fallback: the begin-frame path alone must be exact
        input_location=str(tmp_path / "index.html"),
        start_frame=3,
        frame_count=7,
        output_path=tmp_path / "out.mp4",
    )
    assert decode_frame_indexes(tmp_path / "out.mp4", W, H) == list(range(3, 10))
