"""Render a frame range of a composition to a video file: the one entry point the CLI and workers call.

``render_range`` loads the composition at virtual time 0 (local inputs are served from 127.0.0.1), waits for
fonts and images, fast-forwards to ``start_frame`` without capturing, then steps and captures each frame
while ffmpeg encodes the previous ones. The output appears under ``output_path`` only when complete; on any
error or cancel, Chromium and ffmpeg are killed and nothing is left behind.

Environment (all optional):

- ``HELIOS_CHROMIUM``: the Chromium binary (default: Playwright's, else the system's headless shell/chromium).
- ``HELIOS_FFMPEG``: the ffmpeg binary (default: /usr/bin/ffmpeg, PATH, else imageio-ffmpeg's).
- ``HELIOS_BEGIN_FRAME=0``: with the headless shell, capture with ``Page.captureScreenshot`` instead of
  begin-frame control (``HeadlessExperimental.beginFrame``, the default there, faster and never stale).
- ``HELIOS_CANVAS_PIPELINE=0``: canvas capture without the in-page encoding worker.

Capture path measured here (1280x720, shared 2-core machine, so noisy): begin-frame screenshots of a simple
page ~2-7x the frames/s of ``Page.captureScreenshot``; on raster-heavy pages (titles example) both are
bound by raster and JPEG encoding (~40 ms a frame).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel

from helios_kit.composition.deps import Dependency, url_dependency
from helios_kit.composition.meta import locate_entry
from helios_kit.errors import BrowserFault, HeliosError, RenderError
from helios_kit.render import clock, netguard
from helios_kit.render.browser import Browser, BrowserExecutable, CDPError, Page, find_browser
from helios_kit.render.capture import CanvasCapture, DomCapture, FrameError, choose_capture, run_step
from helios_kit.render.encode import FrameEncoder, ImageFormat, check_output_dir, find_ffmpeg, is_lossless
from helios_kit.render.server import CompositionServer

if TYPE_CHECKING:
    from helios_kit.render.progress import RenderProgress
    from helios_kit.spec import RenderConfig

#: Frames stepped per Runtime.evaluate while fast-forwarding (bounded so cancel and timeouts stay prompt).
FAST_FORWARD_BATCH = 600
DEFAULT_TIMEOUT_S = 30.0


log = logging.getLogger("helios.render")


class RenderStats(BaseModel):
    """What a render did."""

    frames: int
    duration_ms: float
    output_path: str
    capture: str
    fast_forward_ms: float = 0.0
    #: Wall time of the frame loop alone (step + capture + encode, until ffmpeg finished).
    loop_ms: float = 0.0
    browser: str = ""
    #: Every resource the page loaded from the composition (its folder's files, or same-origin URLs).
    dependencies: list[Dependency] = []
    #: Media elements the page showed from frame 0 to the range's end (None: not known).
    media_seen: int | None = None


class RenderCancelled(RenderError):
    """The render was cancelled through its cancel event; nothing was written."""


def resolve_input(input_location: str) -> tuple[str | None, pathlib.Path | None]:
    """(url, None) for http(s) inputs; (None, html_file) for local ones; RenderError when missing."""
    try:
        return locate_entry(input_location)
    except HeliosError as error:
        raise RenderError(str(error)) from None


def _check_range(config: RenderConfig, start_frame: int, frame_count: int) -> None:
    if start_frame < 0:
        raise RenderError(f"start_frame must be >= 0, got {start_frame}")
    if frame_count <= 0:
        raise RenderError(f"frame_count must be > 0, got {frame_count}")
    if config.width <= 0 or config.height <= 0:
        raise RenderError(f"size must be positive, got {config.width}x{config.height}")
    if not config.fps > 0:
        raise RenderError(f"fps must be > 0, got {config.fps}")


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def _check_cancel(cancel: threading.Event | None) -> None:
    if _cancelled(cancel):
        raise RenderCancelled("render cancelled")


def open_page(
    browser: Browser,
    url: str,
    config: RenderConfig,
    timeout: float,
    cancel: threading.Event | None,
    *,
    record_network: bool = False,
) -> Page:
    """A tab at the render size with the virtual-time shim installed, loaded and prepared at t = 0.
    `record_network` keeps the page's network responses (see :func:`url_dependencies`)."""
    page = browser.new_page(config.width, config.height)
    page.send("Page.enable")
    # a worker's page cannot reach its metadata service or loopback (env); a URL input is not our server
    netguard.guard_page(page, url, own_server=not record_network)
    if record_network:
        page.send("Network.enable")
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": config.width, "height": config.height, "deviceScaleFactor": 1, "mobile": False},
    )
    script = clock.init_script(config.fps, timeout, config.props, config.seed)
    page.send("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    navigation = page.wait_pumping(page.send_async("Page.navigate", {"url": url}), timeout)
    if navigation.get("errorText"):
        raise RenderError(f"cannot load {url}: {navigation['errorText']}")
    loaded = _wait_load(page, timeout, cancel)
    _check_cancel(cancel)
    if loaded is None:
        raise RenderError(f"timeout: {url} did not finish loading within {timeout:g} s")
    status = page.evaluate("(performance.getEntriesByType('navigation')[0] || {}).responseStatus || 0", timeout=timeout)
    if isinstance(status, int) and status >= 400:
        raise RenderError(f"cannot load {url}: HTTP {status}")
    if not page.evaluate(clock.INSTALLED_EXPRESSION, timeout=timeout):
        raise RenderError(f"cannot install virtual time in {url} (not an HTML page?)")
    try:
        errors = page.evaluate(clock.PREPARE_EXPRESSION, timeout=timeout + 5)
    except CDPError as error:
        raise RenderError(str(error).splitlines()[0].removeprefix("Error: ")) from None
    except TimeoutError:
        raise RenderError("timeout: frame 0 never became ready (fonts/images)") from None
    if errors:
        raise RenderError(f"composition threw while loading (before frame 0): {errors[0]}")
    return page


def _wait_load(page: Page, timeout: float, cancel: threading.Event | None) -> dict | None:
    """The load event; in begin-frame mode frames are produced while waiting (loading may need them)."""
    if not page.begin_frame_control:
        return page.wait_event("Page.loadEventFired", timeout, abort=lambda: _cancelled(cancel))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _cancelled(cancel):
        event = page.wait_event("Page.loadEventFired", 0.005)
        if event is not None:
            return event
        page.begin_frame(timeout=timeout)
    return None


def url_dependencies(page: Page, entry_url: str) -> list[Dependency]:
    """The responses the page received from the entry URL's origin, each fingerprinted (ETag or sha256)."""
    origin = urlsplit(entry_url)[:2]
    urls = {entry_url}
    for event in page.events("Network.responseReceived"):
        url = str(event.get("response", {}).get("url", ""))
        if urlsplit(url)[:2] == origin:
            urls.add(url.split("#", 1)[0])
    return [url_dependency(url) for url in sorted(urls)]


def use_begin_frame() -> bool:
    """Begin-frame capture (headless shell only) unless HELIOS_BEGIN_FRAME=0."""
    return os.environ.get("HELIOS_BEGIN_FRAME", "1") != "0"


def _frame_error(error: FrameError) -> RenderError:
    if error.message.startswith("timeout:"):
        return RenderError(error.message)
    return RenderError(f"composition threw at frame {error.frame}: {error.message}")


def fast_forward(page: Page, start: int, stop: int, timeout: float, cancel: threading.Event | None) -> None:
    """Step frames [start, stop) without capturing, in batches."""
    frame = start
    while frame < stop:
        _check_cancel(cancel)
        batch_end = min(stop, frame + FAST_FORWARD_BATCH)
        run_step(page, clock.fast_forward_expression(frame, batch_end), frame, timeout * 4 + 60)
        frame = batch_end


def render_range(
    config: RenderConfig,
    *,
    input_location: str,
    start_frame: int,
    frame_count: int,
    output_path: pathlib.Path,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    quiet: bool = True,
    image_format: ImageFormat | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RenderStats:
    """Render frames [start_frame, start_frame + frame_count) of `input_location` into `output_path`.

    `image_format` forces how frames travel to ffmpeg (default: PNG when the codec settings are lossless,
    else JPEG). `timeout_s` bounds page load and each frame's readiness.

    Begin-frame capture (the fastest) now and then stops getting pictures from Chromium, mostly under load
    ("no picture for frame N"); such a render restarts once with Page.captureScreenshot, which has not shown
    that fault. The composition's own errors are not retried.
    """
    arguments = dict(
        input_location=input_location,
        start_frame=start_frame,
        frame_count=frame_count,
        output_path=output_path,
        progress=progress,
        cancel=cancel,
        quiet=quiet,
        image_format=image_format,
        timeout_s=timeout_s,
    )
    begin_frame = use_begin_frame() and not _declares_video(input_location)
    try:
        return _render_once(config, begin_frame=begin_frame, **arguments)
    except BrowserFault as fault:
        if not begin_frame or _cancelled(cancel):
            raise
        log.warning("begin-frame capture failed (%s); rendering again with Page.captureScreenshot", fault)
        return _render_once(config, begin_frame=False, **arguments)


def _declares_video(input_location: str) -> bool:
    """True when a local composition's HTML has a <video>. Begin-frame capture was seen to keep a video's
    picture from load time at a chunk's first frame (element seeked, picture not), in up to 2 of 3 runs of
    the timeline example's chunk-invariance check, while Page.captureScreenshot matched in 10 of 10 runs
    under load; such compositions render with the latter."""
    try:
        _url, html_file = resolve_input(input_location)
        return html_file is not None and "<video" in html_file.read_text(errors="replace").lower()
    except (RenderError, OSError):
        return False  # the render itself reports a missing input


def _encoder(output_path: pathlib.Path, config: RenderConfig, frame_count: int, fmt: ImageFormat) -> FrameEncoder:
    return FrameEncoder(
        output_path,
        fps=config.fps,
        frame_count=frame_count,
        image_format=fmt,
        video_codec=config.video_codec,
        pixel_format=config.pixel_format,
        crf=config.crf,
    )


def _terminal_progress(output_path: pathlib.Path, frame_count: int) -> RenderProgress:
    from helios_kit.render.progress import RenderProgress

    return RenderProgress(output_path.name, frame_count)


def _media_seen(page: Page, timeout_s: float) -> int | None:
    """How many media elements the page has shown since frame 0 (a render steps every frame from 0, so a
    range's last frame has seen all that appeared before it); None when the page cannot say."""
    try:
        count = page.evaluate("(window.__heliosInternal.describeMedia() || []).length", timeout=timeout_s)
    except (CDPError, TimeoutError):
        return None
    return count if isinstance(count, int) else None


def _capture_frames(
    capture: DomCapture | CanvasCapture,
    encoder: FrameEncoder,
    start_frame: int,
    frame_count: int,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Step and capture frames [start_frame, start_frame + frame_count) into the encoder."""
    done = 0
    for index in range(frame_count + 1):
        _check_cancel(cancel)
        try:
            # Pipelined captures hand back earlier frames; the extra turn flushes the last ones.
            images = capture.frames(start_frame + index) if index < frame_count else capture.flush()
        except FrameError as error:
            raise _frame_error(error) from None
        for image in images:
            encoder.put(image)
            done += 1
            if progress is not None:
                progress(done, frame_count)


def _preflight(
    config: RenderConfig, input_location: str, start_frame: int, frame_count: int, output_path: pathlib.Path
) -> tuple[str | None, pathlib.Path | None, BrowserExecutable]:
    """Everything a render needs before it starts a browser: a valid range, the composition's entry, a
    writable output folder, ffmpeg and a browser (RenderError naming what is missing)."""
    _check_range(config, start_frame, frame_count)
    url, html_file = resolve_input(input_location)
    check_output_dir(output_path)
    find_ffmpeg()
    return url, html_file, find_browser()


def _render_once(
    config: RenderConfig,
    *,
    begin_frame: bool,
    input_location: str,
    start_frame: int,
    frame_count: int,
    output_path: pathlib.Path,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    quiet: bool = True,
    image_format: ImageFormat | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RenderStats:
    """One attempt of :func:`render_range`, with or without begin-frame capture."""
    started = time.monotonic()
    output_path = pathlib.Path(output_path).expanduser().absolute()
    url, html_file, executable = _preflight(config, input_location, start_frame, frame_count, output_path)
    fmt: ImageFormat = image_format or ("png" if is_lossless(config.video_codec, config.crf) else "jpeg")

    reporter = _terminal_progress(output_path, frame_count) if progress is None and not quiet else None
    progress = progress or reporter

    server: CompositionServer | None = None
    browser: Browser | None = None
    encoder: FrameEncoder | None = None
    with contextlib.ExitStack() as stack:
        if reporter is not None:
            stack.enter_context(reporter)
        try:
            _check_cancel(cancel)
            if html_file is not None:
                server = CompositionServer(html_file.parent)
                url = server.url_for(html_file)
            assert url is not None
            browser = Browser(executable, begin_frame_control=begin_frame)
            page = open_page(browser, url, config, timeout_s, cancel, record_network=html_file is None)
            requested = str(getattr(config.capture, "value", config.capture))
            capture: DomCapture | CanvasCapture = choose_capture(page, requested, fmt, timeout_s)
            ff_started = time.monotonic()
            try:
                fast_forward(page, 0, start_frame, timeout_s, cancel)
            except FrameError as error:
                raise _frame_error(error) from None
            ff_ms = (time.monotonic() - ff_started) * 1000
            encoder = _encoder(output_path, config, frame_count, fmt)
            loop_started = time.monotonic()
            _capture_frames(capture, encoder, start_frame, frame_count, cancel, progress)
            media_seen = _media_seen(page, timeout_s)
            _check_cancel(cancel)
            browser.close()
            browser = None
            encoder.finish()
            encoder = None
            loop_ms = (time.monotonic() - loop_started) * 1000
            dependencies = server.served() if server is not None else url_dependencies(page, url)
        except (CDPError, TimeoutError, BrowserFault) as error:
            # Cancelling tears the browser down under a running DevTools call: that failure is the cancel.
            _check_cancel(cancel)
            if isinstance(error, BrowserFault):
                raise
            raise BrowserFault(f"browser failed: {error}") from None
        finally:
            if encoder is not None:
                encoder.abort()
            if browser is not None:
                browser.close()
            if server is not None:
                server.close()
    return RenderStats(
        frames=frame_count,
        duration_ms=(time.monotonic() - started) * 1000,
        output_path=os.fspath(output_path),
        capture=capture.mode,
        fast_forward_ms=ff_ms,
        loop_ms=loop_ms,
        browser=executable.path,
        dependencies=dependencies,
        media_seen=media_seen,
    )
