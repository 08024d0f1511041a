"""A browser fault fails one attempt of a render, never its output: `render_range` renders once more in a
fresh browser with Page.captureScreenshot, whatever the first attempt's capture mode, and ships only frames
of the attempt that finished (helios_kit/render/session.py render_range)."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fakes.jobs import FRAME_INDEX_HTML
from fakes.renders import decode_frame_indexes

from helios_kit.errors import BrowserFault, RenderError
from helios_kit.render import RenderCancelled, render_range
from helios_kit.render import capture as capture_module
from helios_kit.render import session as session_module
from helios_kit.spec import RenderConfig

W, H = 160, 120


def _composition(folder: pathlib.Path) -> str:
    (folder / "index.html").write_text(FRAME_INDEX_HTML)
    return str(folder / "index.html")


def _settings() -> RenderConfig:
    return RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=12)


class _StallOnce:
    """Wraps the captures' `frame`: the first call for frame `at` stalls (as new-headless Chromium's
    Page.captureScreenshot does under load) and records the page it happened in."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.stalled_in: list[object] = []

    def wrap(self, real: Callable[..., bytes]) -> Callable[..., bytes]:
        def frame(capture: Any, index: int, *rest: Any) -> bytes:
            if index == self.at and not self.stalled_in:
                self.stalled_in.append(capture.page)
                raise BrowserFault("screenshot failed: CDP Page.captureScreenshot did not answer within 30 s")
            return real(capture, index, *rest)

        return frame


@pytest.mark.render
@pytest.mark.parametrize("begin_frame", ["0", "1"], ids=["screenshot", "begin-frame"])
def test_a_stalled_capture_is_rendered_again_and_the_output_is_exact(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, begin_frame: str
) -> None:
    monkeypatch.setenv("HELIOS_BEGIN_FRAME", begin_frame)
    stall = _StallOnce(at=6)
    for kind in (capture_module.DomCapture, capture_module.BeginFrameCapture):
        monkeypatch.setattr(kind, "frame", stall.wrap(kind.frame))
    seen: list[tuple[int, int]] = []
    out = tmp_path / "chunk.mp4"
    stats = render_range(
        _settings(),
        input_location=_composition(tmp_path),
        start_frame=2,
        frame_count=8,
        output_path=out,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(stall.stalled_in) == 1  # the fault happened, in the first attempt
    assert stats.capture == "dom"  # the second attempt used Page.captureScreenshot
    assert decode_frame_indexes(out, W, H) == list(range(2, 10))
    assert seen[-1] == (8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk.mp4", "index.html"]  # no partial left


@pytest.mark.parametrize("begin_frame", ["0", "1"], ids=["screenshot", "begin-frame"])
def test_a_second_fault_fails_the_render_retryably(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, begin_frame: str
) -> None:
    monkeypatch.setenv("HELIOS_BEGIN_FRAME", begin_frame)
    attempts: list[bool] = []

    def always_stalls(config: RenderConfig, *, begin_frame: bool, **kw: object) -> None:
        attempts.append(begin_frame)
        raise BrowserFault("screenshot failed: stalled")

    monkeypatch.setattr(session_module, "_render_once", always_stalls)
    with pytest.raises(BrowserFault) as raised:
        render_range(_settings(), input_location="x.html", start_frame=0, frame_count=1, output_path=tmp_path / "o")
    assert raised.value.retryable  # the executor's own attempts come next
    assert attempts == [begin_frame == "1", False]


@pytest.mark.parametrize(
    "error", [RenderError("composition threw at frame 3: boom"), RenderCancelled("cancelled")], ids=repr
)
def test_the_compositions_errors_and_cancels_are_not_rendered_again(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    attempts: list[bool] = []

    def fails(config: RenderConfig, *, begin_frame: bool, **kw: object) -> None:
        attempts.append(begin_frame)
        raise error

    monkeypatch.setattr(session_module, "_render_once", fails)
    with pytest.raises(type(error)):
        render_range(_settings(), input_location="x.html", start_frame=0, frame_count=1, output_path=tmp_path / "o")
    assert len(attempts) == 1


def test_a_fault_after_a_cancel_is_the_cancel(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    attempts: list[bool] = []

    def cancelled_mid_call(config: RenderConfig, *, begin_frame: bool, **kw: object) -> None:
        attempts.append(begin_frame)
        stop.set()  # the browser was torn down under a DevTools call by the cancel
        raise BrowserFault("browser failed: connection closed")

    monkeypatch.setattr(session_module, "_render_once", cancelled_mid_call)
    with pytest.raises(BrowserFault):
        render_range(
            _settings(), input_location="x.html", start_frame=0, frame_count=1, output_path=tmp_path / "o", cancel=stop
        )
    assert len(attempts) == 1
