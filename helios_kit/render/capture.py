"""Read one frame's pixels out of the page: DOM screenshots over CDP, or the composition's canvas directly.

- ``dom``: ``Page.captureScreenshot`` with an exact clip of width x height at scale 1, ``optimizeForSpeed``,
  JPEG (quality 92) or PNG when the encode is lossless.
- ``canvas``: the page's single canvas via ``canvas.toDataURL`` in the same ``Runtime.evaluate`` that steps
  the frame (one round trip per frame instead of two, no compositing, no screenshot path).
- ``auto``: ``canvas`` when the page holds exactly one canvas that covers the viewport at exactly the render
  size with nothing else visible; otherwise ``dom``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from helios_kit.errors import BrowserFault, RenderError
from helios_kit.render import clock
from helios_kit.render.browser import CDPError, Page
from helios_kit.render.encode import ImageFormat
from helios_kit.render.profile import NULL_PROFILER, Profiler

JPEG_QUALITY = 92


class FrameError(Exception):
    """The page reported an error (thrown by the composition, or a timeout) while stepping a frame."""

    def __init__(self, frame: int, message: str) -> None:
        super().__init__(message)
        self.frame = frame
        self.message = message


def _clean(message: str) -> str:
    """First line of a JS error description, without the 'Error: ' prefix of our own timeouts."""
    line = (message or "").strip().splitlines()[0] if message and message.strip() else "unknown error"
    return line.removeprefix("Error: ") if line.startswith("Error: timeout:") else line


#: Extra seconds the CDP call waits beyond the in-page timeout, so the page's own (better) message wins.
CDP_MARGIN_S = 10.0


def run_step(
    page: Page, expression: str, frame: int, timeout: float, profile: Profiler = NULL_PROFILER, phase: str = "page step"
) -> Any:
    """Evaluate a step expression; raise FrameError for page errors and timeouts."""
    try:
        with profile.phase(phase):
            result = page.evaluate(expression, timeout=timeout + CDP_MARGIN_S)
    except CDPError as error:
        raise FrameError(frame, _clean(str(error))) from None
    except TimeoutError:
        raise FrameError(frame, f"timeout: frame {frame} never became ready (page did not answer)") from None
    if isinstance(result, dict) and result.get("error"):
        raise FrameError(int(result.get("frame", frame)), _clean(str(result["error"])))
    return result


class DomCapture:
    """Step the page, then take a CDP screenshot of exactly width x height."""

    mode = "dom"
    #: Where the time goes (set by the session when HELIOS_PROFILE is on).
    profile: Profiler = NULL_PROFILER

    def __init__(self, page: Page, image_format: ImageFormat, timeout: float) -> None:
        self.page = page
        self.timeout = timeout
        self.params: dict[str, Any] = {
            "format": image_format,
            "clip": {"x": 0, "y": 0, "width": page.width, "height": page.height, "scale": 1},
            "optimizeForSpeed": True,
            "captureBeyondViewport": False,
            "fromSurface": True,
        }
        if image_format == "jpeg":
            self.params["quality"] = JPEG_QUALITY

    def frame(self, frame: int, steps_from: int | None = None) -> bytes:
        result = step_frame(self.page, frame, self.timeout, self.profile, steps_from)
        shot = self.screenshot()
        if video_check(result):
            # A seeked <video> picture reaches the display on its own surface, possibly after this
            # screenshot: capture again until the image shows it (see video_fresh).
            shot = until_video_fresh(self.page, frame, shot, self.screenshot, self.timeout)
        return shot

    def frames(self, frame: int, steps_from: int | None = None) -> list[bytes]:
        """The images ready after stepping `frame` (here: exactly that frame's). `steps_from`: the page is at
        that earlier frame, and the frames up to `frame` are stepped without capture first (same call)."""
        return [self.frame(frame, steps_from)]

    def flush(self) -> list[bytes]:
        """Images still held after the last frame (none: DOM capture is not pipelined)."""
        return []

    def screenshot(self) -> bytes:
        try:
            with self.profile.phase("capture (screenshot)"):
                shot = self.page.send("Page.captureScreenshot", self.params, timeout=self.timeout)
        except (CDPError, TimeoutError) as error:
            raise BrowserFault(f"screenshot failed: {error}") from None
        with self.profile.phase("base64 decode"):
            return base64.b64decode(shot["data"])


#: The in-page wait for a seeked <video>'s picture, as its timeout message names it (clock.js seekVideos).
VIDEO_WAIT = "<video> picture not presented"


def step_frame(
    page: Page, frame: int, timeout: float, profile: Profiler = NULL_PROFILER, steps_from: int | None = None
) -> Any:
    """Step `frame` for capture (from frame `steps_from` on, those before it without capture); a <video>
    whose picture never arrives fails retryably (BrowserFault)."""
    try:
        return run_step(page, clock.step_expression(frame, steps_from), frame, timeout, profile)
    except FrameError as error:
        if VIDEO_WAIT in error.message:
            raise BrowserFault(
                f"frame {frame}: a <video> picture was not presented within the render timeout"
            ) from None
        raise


class UncheckedVideo(BrowserFault):
    """A ``<video>`` on screen that the picture check cannot see (in a shadow root or an iframe, behind
    opacity or a filter, rotated, cross-origin). Begin-frame capture draws only when asked, and such a
    picture could be captured before it arrives, unnoticed: the render goes on with Page.captureScreenshot."""


def fallback_level(fault: BrowserFault) -> int:
    """How loudly a render going on with Page.captureScreenshot after `fault` is logged: a video the check
    cannot see is a feature of the page (INFO), anything else a fault of the browser (WARNING)."""
    return logging.INFO if isinstance(fault, UncheckedVideo) else logging.WARNING


def video_unchecked(result: Any) -> str | None:
    """Why a <video> on screen at this step cannot be checked (clock.js ``videoProbe``), or None."""
    reason = result.get("videoUnchecked") if isinstance(result, dict) else None
    return str(reason) if reason else None


def video_check(result: Any) -> bool:
    """True when the step seeked a <video> whose captured picture can (and must) be checked."""
    return isinstance(result, dict) and bool(result.get("videoCheck"))


def video_fresh(page: Page, image: bytes, mime: str, timeout: float) -> bool:
    """Whether `image` shows every seeked <video>'s target picture (the page compares probe points)."""
    data = json.dumps(base64.b64encode(image).decode("ascii"))
    try:
        verdict = page.evaluate(f"window.__heliosInternal.checkVideoShot({data}, {json.dumps(mime)})", timeout=timeout)
    except (CDPError, TimeoutError) as error:
        raise BrowserFault(f"<video> picture check failed: {error}") from None
    return bool(isinstance(verdict, dict) and verdict.get("ok"))


def until_video_fresh(
    page: Page, frame: int, image: bytes, again: Callable[[], bytes | None], timeout: float, mime: str | None = None
) -> bytes:
    """`image`, or the first later capture (`again`) that shows the seeked <video> pictures; a stale picture
    that outlasts the render timeout fails the frame retryably. Never returns a stale picture."""
    mime = mime or ("image/png" if image.startswith(b"\x89PNG") else "image/jpeg")
    deadline = time.monotonic() + timeout
    current: bytes | None = image
    while current is None or not video_fresh(page, current, mime, timeout):
        if time.monotonic() > deadline:
            raise BrowserFault(f"frame {frame}: the captured <video> picture stayed stale for {timeout:g} s")
        current = again()
    return current


#: Drawing frames asked for the step's picture before the frame fails (retryably).
PICTURE_ATTEMPTS = 4


class BeginFrameCapture(DomCapture):
    """Step the page, then produce the frame with HeadlessExperimental.beginFrame carrying a screenshot.

    Only in begin-frame mode (headless shell): Chromium draws nothing unless asked. Frames produced while
    waiting for the page draw nothing (``Page.pump``, noDisplayUpdates) and every frame that draws asks
    for a picture, so the last picture received is always what the display shows. Then a frame answered
    without damage is that picture, truly unchanged; a frame with damage but no picture is retried with a
    later frame, and a step that never gets one fails its render with a retryable BrowserFault: never a
    stale or duplicated frame.
    """

    mode = "dom"

    def __init__(self, page: Page, image_format: ImageFormat, timeout: float) -> None:
        super().__init__(page, image_format, timeout)
        self.shot: dict[str, Any] = {"format": image_format, "optimizeForSpeed": True}
        if image_format == "jpeg":
            self.shot["quality"] = JPEG_QUALITY
        #: The picture of the last drawn frame (None before the first).
        self.last: bytes | None = None

    def frame(self, frame: int, steps_from: int | None = None) -> bytes:
        result = step_frame(self.page, frame, self.timeout, self.profile, steps_from)
        reason = video_unchecked(result)
        if reason:
            raise UncheckedVideo(f"frame {frame}: a <video> {reason} cannot have its picture checked")
        picture = self._picture(frame)
        if video_check(result):
            # A seeked <video> picture can reach the display a frame late: draw on until it shows.
            picture = until_video_fresh(self.page, frame, picture, lambda: self._draw(frame), self.timeout)
        return picture

    def _picture(self, frame: int) -> bytes:
        for _ in range(PICTURE_ATTEMPTS):
            picture = self._draw(frame)
            if picture is not None:
                return picture
        raise BrowserFault(f"screenshot failed: Chromium produced no picture for frame {frame}")

    def _draw(self, frame: int) -> bytes | None:
        """Draw one frame; its picture, the unchanged last one when it had no damage, or None."""
        try:
            with self.profile.phase("capture (beginFrame)"):
                result = self.page.begin_frame(self.shot, timeout=self.timeout)
        except (CDPError, TimeoutError) as error:
            raise BrowserFault(f"screenshot failed at frame {frame}: {error}") from None
        if result.get("screenshotData"):
            with self.profile.phase("base64 decode"):
                self.last = base64.b64decode(result["screenshotData"])
            return self.last
        if not result.get("hasDamage", True):
            return self.last
        return None


class CanvasCapture:
    """Step the page and read its canvas with toDataURL in the same evaluation."""

    mode = "canvas"
    profile: Profiler = NULL_PROFILER

    def __init__(self, page: Page, image_format: ImageFormat, timeout: float) -> None:
        self.page = page
        self.timeout = timeout
        self.mime = "image/jpeg" if image_format == "jpeg" else "image/png"
        self.quality = JPEG_QUALITY / 100
        self.pipelined = os.environ.get("HELIOS_CANVAS_PIPELINE", "1") != "0"

    def frame(self, frame: int) -> bytes:
        expression = clock.step_and_capture_expression(frame, self.mime, self.quality)
        result = run_step(self.page, expression, frame, self.timeout, self.profile, "page step + toDataURL")
        with self.profile.phase("base64 decode"):
            return base64.b64decode(result["data"])

    def frames(self, frame: int, steps_from: int | None = None) -> list[bytes]:
        """Pipelined: step and snapshot `frame`, return the previous frame's image (encoded by a worker
        in the page while this frame was being drawn). Call :meth:`flush` after the last frame. `steps_from`:
        the page is at that earlier frame; the frames before `frame` are stepped without capture first."""
        if steps_from is not None and steps_from < frame:
            run_step(self.page, clock.fast_forward_expression(steps_from, frame), steps_from, self.timeout)
        if not self.pipelined:
            return [self.frame(frame)]
        expression = (
            f"window.__heliosInternal.stepAndCapturePipelined({int(frame)}, {json.dumps(self.mime)}, {self.quality})"
        )
        result = run_step(self.page, expression, frame, self.timeout, self.profile, "page step + snapshot")
        with self.profile.phase("base64 decode"):
            return self._images(result, frame - 1)

    def flush(self) -> list[bytes]:
        if not self.pipelined:
            return []
        result = run_step(self.page, "window.__heliosInternal.flushCapture()", -1, self.timeout, self.profile, "flush")
        return self._images(result, -1)

    @staticmethod
    def _images(result: Any, frame: int) -> list[bytes]:
        if isinstance(result, dict) and result.get("error"):
            raise RenderError(f"canvas capture failed at frame {frame}: {result['error']}")
        data = result.get("data") if isinstance(result, dict) else None
        return [base64.b64decode(data)] if data else []


def canvas_info(page: Page) -> dict[str, Any]:
    """What the page's canvas looks like to `auto` (usable, covers, exact, others, context)."""
    return page.evaluate(f"window.__heliosInternal.canvasInfo({page.width}, {page.height})") or {}


def choose_capture(page: Page, requested: str, image_format: ImageFormat, timeout: float) -> DomCapture | CanvasCapture:
    """The capture for `requested` (auto | dom | canvas); `canvas` on a page without one canvas is an error."""
    dom: type[DomCapture] = BeginFrameCapture if page.begin_frame_control else DomCapture
    if requested == "dom":
        return dom(page, image_format, timeout)
    info = canvas_info(page)
    if requested == "canvas":
        if not info.get("covers", False) and info.get("reason"):
            raise RenderError(f"capture=canvas: the composition must have exactly one canvas, found {info['reason']}")
        return CanvasCapture(page, image_format, timeout)
    if info.get("usable"):
        return CanvasCapture(page, image_format, timeout)
    return dom(page, image_format, timeout)
