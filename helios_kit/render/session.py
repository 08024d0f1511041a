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
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from helios_kit.composition.deps import Dependency, url_dependency
from helios_kit.composition.media import MediaScan
from helios_kit.composition.meta import locate_entry
from helios_kit.errors import BrowserFault, HeliosError, RenderError
from helios_kit.render import clock, webcodecs
from helios_kit.render.browser import BrowserExecutable, CDPError, Page, find_browser
from helios_kit.render.capture import (
    CanvasCapture,
    DomCapture,
    FrameError,
    choose_capture,
    fallback_level,
    run_step,
)
from helios_kit.render.encode import FrameEncoder, ImageFormat, check_output_dir, find_ffmpeg, is_lossless
from helios_kit.render.encode_stream import StreamCopyEncoder
from helios_kit.render.load_failures import failed_loads
from helios_kit.render.media import describe_media
from helios_kit.render.page import RenderCancelled as RenderCancelled  # re-exported
from helios_kit.render.page import cancelled as _cancelled
from helios_kit.render.page import check_cancel as _check_cancel
from helios_kit.render.page import open_page as open_page  # re-exported (probe, tests)
from helios_kit.render.profile import (
    Profiler,
    RenderProfile,
    children_cpu_s,
    new_profiler,
    print_profile,
    tree_cpu_s,
)
from helios_kit.render.server import CompositionServer
from helios_kit.render.warm import BrowserSource, TabKey, WarmBrowser
from helios_kit.render.webcodecs import WebCodecsCapture

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
    #: Those elements, as the audio mix reads them (None: not known); a whole render mixes its soundtrack
    #: from them instead of stepping the page again in a browser of its own.
    media: MediaScan | None = None
    #: Resources the page could not load, as '<url> (<reason>)' (the composition's own files aside: a file
    #: its folder lacks is a dependency with no size).
    failed_loads: list[str] = []
    #: Seam images written beside the output (see `seam` of :func:`render_range`): {"head"|"tail": path}.
    seam_files: dict[str, str] = {}
    #: Where the time went (only with HELIOS_PROFILE=1; see render/profile.py).
    profile: RenderProfile | None = None


class SeamImages(BaseModel):
    """Images a render keeps for seam checks: `head` is the range's first frame, reached by fast-forward;
    `tail` renders one frame more than the range (its first frame after, played through), kept out of the
    video. Each is written as `<stem>.png` or `<stem>.jpg` (the capture's own bytes)."""

    head: pathlib.Path | None = None
    tail: pathlib.Path | None = None


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


def url_dependencies(page: Page, entry_url: str | None, named: Collection[str] = ()) -> list[Dependency]:
    """The responses the page received from the entry URL's origin (none for a local composition), and
    those for the URLs in `named` (assets its props name), each fingerprinted (ETag or sha256)."""
    origin = urlsplit(entry_url)[:2] if entry_url else None
    urls = {entry_url} if entry_url else set()
    for event in page.events("Network.responseReceived"):
        url = str(event.get("response", {}).get("url", "")).split("#", 1)[0]
        if (origin is not None and urlsplit(url)[:2] == origin) or url in named:
            urls.add(url)
    return [url_dependency(url) for url in sorted(urls)]


def prop_urls(props: object) -> set[str]:
    """The http(s) URLs a render's props name (an asset a row points at), at any depth."""
    if isinstance(props, str):
        return {props.split("#", 1)[0]} if props.startswith(("http://", "https://")) else set()
    if isinstance(props, dict):
        return set().union(*(prop_urls(value) for value in props.values())) if props else set()
    if isinstance(props, list | tuple):
        return set().union(*(prop_urls(value) for value in props)) if props else set()
    return set()


def use_begin_frame() -> bool:
    """Begin-frame capture (headless shell only) unless HELIOS_BEGIN_FRAME=0."""
    return os.environ.get("HELIOS_BEGIN_FRAME", "1") != "0"


def frame_error(error: FrameError) -> RenderError:
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
    warm: WarmBrowser | None = None,
    seam: SeamImages | None = None,
) -> RenderStats:
    """Render frames [start_frame, start_frame + frame_count) of `input_location` into `output_path`.

    `image_format` forces how frames travel to ffmpeg (default: PNG when the codec settings are lossless,
    else JPEG). `timeout_s` bounds page load and each frame's readiness. `warm` renders in a kept browser
    (:class:`~helios_kit.render.warm.WarmBrowser`, reset between renders) instead of starting one.

    A browser fault (:class:`~helios_kit.errors.BrowserFault`: a lost picture, a stalled DevTools call, a
    crash; mostly under load) restarts the render once, in a fresh browser and with Page.captureScreenshot:
    begin-frame capture now and then stops getting pictures ("no picture for frame N"), and new-headless
    Chromium's captureScreenshot now and then stalls past its timeout. The failed attempt wrote nothing. The
    composition's own errors, and cancels, are not retried.
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
        warm=warm,
        seam=seam,
    )
    begin_frame = use_begin_frame()
    try:
        return _render_once(config, begin_frame=begin_frame, **arguments)
    except BrowserFault as fault:
        if _cancelled(cancel):
            raise
        log.log(fallback_level(fault), "%s; rendering again in a fresh browser with Page.captureScreenshot", fault)
        return _render_once(config, begin_frame=False, **arguments)


def local_html(input_location: str) -> str | None:
    """A local composition's HTML, lowercased, for what it says before anything loads; None for a URL, or
    when it cannot be read (the render itself reports a missing input)."""
    try:
        _url, html_file = resolve_input(input_location)
        return html_file.read_text(errors="replace").lower() if html_file is not None else None
    except (RenderError, OSError):
        return None


def tab_key(
    executable: BrowserExecutable, begin_frame: bool, config: RenderConfig, input_location: str, *, local: bool
) -> TabKey:
    """The tab a render needs: its network recorded when the composition is a URL or its props name assets
    (those are its dependencies then), trusted by the network guard when served by its own server."""
    record = not local or bool(prop_urls(config.props))
    return TabKey(executable.path, begin_frame, config.width, config.height, input_location, record, local)


def _encoder(
    output_path: pathlib.Path,
    config: RenderConfig,
    frame_count: int,
    fmt: ImageFormat,
    profile: Profiler,
    encoded: bool = False,
) -> FrameEncoder:
    with profile.phase("ffmpeg start"):
        if encoded:  # the page encodes (WebCodecs): ffmpeg only muxes
            return StreamCopyEncoder(output_path, fps=config.fps, frame_count=frame_count, profile=profile)
        return image_encoder(output_path, config, frame_count, fmt, profile)


def image_encoder(
    output_path: pathlib.Path, config: RenderConfig, frame_count: int, fmt: ImageFormat, profile: Profiler
) -> FrameEncoder:
    return FrameEncoder(
        output_path,
        profile=profile,
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


def shown_media(
    page: Page, server: CompositionServer | None, frames_stepped: int, timeout_s: float
) -> MediaScan | None:
    """The media elements the page has shown since frame 0 (a render steps every frame from 0, so a range's
    last frame has seen all that appeared before it); None when the page cannot say."""
    try:
        return describe_media(page, server, frames_stepped, timeout_s)
    except (CDPError, TimeoutError, ValidationError):
        return None


def _capture_frames(
    capture: DomCapture | CanvasCapture,
    encoder: FrameEncoder,
    start_frame: int,
    frame_count: int,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
    seam: _SeamSink | None = None,
) -> None:
    """Step and capture frames [start_frame, start_frame + frame_count) into the encoder (and, for seam
    checks, the first image and one frame more into `seam`)."""
    total = frame_count + (1 if seam is not None and seam.wants_tail else 0)
    done = 0
    for index in range(total + 1):
        _check_cancel(cancel)
        try:
            # Pipelined captures hand back earlier frames; the extra turn flushes the last ones.
            images = capture.frames(start_frame + index) if index < total else capture.flush()
        except FrameError as error:
            raise frame_error(error) from None
        for image in images:
            if seam is not None:
                seam.offer(done, frame_count, image)
            if done < frame_count:
                encoder.put(image)
                if progress is not None:
                    progress(done + 1, frame_count)
            done += 1


def _encode_frames(
    capture: WebCodecsCapture,
    encoder: FrameEncoder,
    start_frame: int,
    frame_count: int,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    try:
        webcodecs.encode_frames(capture, encoder, start_frame, frame_count, lambda: _check_cancel(cancel), progress)
    except FrameError as error:
        raise frame_error(error) from None


class _SeamSink:
    """Writes the seam images of one render as they are captured (see :class:`SeamImages`)."""

    def __init__(self, seam: SeamImages, fmt: ImageFormat) -> None:
        self.seam = seam
        self.suffix = ".png" if fmt == "png" else ".jpg"
        self.written: dict[str, str] = {}

    @property
    def wants_tail(self) -> bool:
        return self.seam.tail is not None

    def offer(self, index: int, frame_count: int, image: bytes) -> None:
        if index == 0 and self.seam.head is not None:
            self._write("head", self.seam.head, image)
        if index == frame_count and self.seam.tail is not None:
            self._write("tail", self.seam.tail, image)

    def _write(self, name: str, stem: pathlib.Path, image: bytes) -> None:
        path = stem.with_name(stem.name + self.suffix)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(image)
        os.replace(tmp, path)
        self.written[name] = os.fspath(path)


def _choose(
    page: Page, config: RenderConfig, fmt: ImageFormat, timeout_s: float, seam: SeamImages | None, profiler: Profiler
) -> DomCapture | CanvasCapture | WebCodecsCapture:
    """The capture for the render (the in-page encoder when HELIOS_CANVAS_WEBCODECS asks and can), profiled."""
    requested = str(getattr(config.capture, "value", config.capture))
    with profiler.phase("choose capture"):
        capture: DomCapture | CanvasCapture | WebCodecsCapture = choose_capture(page, requested, fmt, timeout_s)
        lossless = is_lossless(config.video_codec, config.crf)
        if (
            isinstance(capture, CanvasCapture)
            and seam is None
            and webcodecs.wanted(config.video_codec, config.pixel_format, lossless)
        ):
            capture = WebCodecsCapture(page, config.fps, timeout_s)
    capture.profile = profiler
    return capture


def _release(source: BrowserSource, page: Page, profiler: Profiler) -> None:
    """Hand the tab back to its source (booking the browser's CPU first when profiling)."""
    if profiler.active:
        profiler.add("cpu: browser (all processes)", tree_cpu_s(page.browser.process.pid))
    with profiler.phase("browser close/reset"):
        source.release(page)


def finish_encoder(encoder: FrameEncoder, profiler: Profiler) -> None:
    """Let ffmpeg finish and commit the output (booking ffmpeg's CPU, reaped by the wait)."""
    before = children_cpu_s()
    encoder.finish()
    profiler.add("cpu: ffmpeg", children_cpu_s() - before)


def report_profile(profiler: Profiler, frame_count: int, label: str) -> RenderProfile | None:
    """The render's profile (printed to stderr), or None when profiling is off."""
    if not profiler.active:
        return None
    profile = profiler.report(frame_count)
    print_profile(profile, label)
    return profile


def _split_launch(profiler: Profiler, source: BrowserSource, page: Page) -> None:
    """Book a cold render's browser launch apart from its page load (a warm tab's launch was earlier)."""
    launch_s = getattr(page.browser, "launch_s", None)
    if profiler.active and type(source) is BrowserSource and launch_s is not None:
        profiler.add("  of which browser launch", launch_s)


def preflight(
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
    warm: WarmBrowser | None = None,
    seam: SeamImages | None = None,
) -> RenderStats:
    """One attempt of :func:`render_range`, with or without begin-frame capture."""
    started = time.monotonic()
    output_path = pathlib.Path(output_path).expanduser().absolute()
    url, html_file, executable = preflight(config, input_location, start_frame, frame_count, output_path)
    fmt: ImageFormat = image_format or ("png" if is_lossless(config.video_codec, config.crf) else "jpeg")

    reporter = _terminal_progress(output_path, frame_count) if progress is None and not quiet else None
    progress = progress or reporter

    profiler = new_profiler()
    server: CompositionServer | None = None
    source: BrowserSource | None = warm or BrowserSource()
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
            named = prop_urls(config.props)  # assets the props name: dependencies like the composition's files
            local = html_file is not None
            key = tab_key(executable, begin_frame, config, input_location, local=local)
            opening, source = source, None  # a failed open has already discarded what it started
            with profiler.phase("browser launch + page load"):
                page = opening.open(key, executable, url, config, timeout_s, cancel)
            _split_launch(profiler, opening, page)
            source = opening
            capture = _choose(page, config, fmt, timeout_s, seam, profiler)
            ff_started = time.monotonic()
            try:
                fast_forward(page, 0, start_frame, timeout_s, cancel)
            except FrameError as error:
                raise frame_error(error) from None
            ff_ms = (time.monotonic() - ff_started) * 1000
            profiler.add("fast-forward", ff_ms / 1000)
            encoder = _encoder(output_path, config, frame_count, fmt, profiler, isinstance(capture, WebCodecsCapture))
            loop_started = time.monotonic()
            seam_sink = _SeamSink(seam, fmt) if seam is not None else None
            if isinstance(capture, WebCodecsCapture):
                _encode_frames(capture, encoder, start_frame, frame_count, cancel, progress)
            else:
                _capture_frames(capture, encoder, start_frame, frame_count, cancel, progress, seam_sink)
            media = shown_media(page, server, start_frame + frame_count, timeout_s)
            failed = failed_loads(page, server.base_url if server is not None else None)
            _check_cancel(cancel)
            dependencies = url_dependencies(page, None if local else url, named) if key.record_network else []
            _release(source, page, profiler)  # cold: the browser closes; warm: the tab is reset for the next render
            source = None
            finish_encoder(encoder, profiler)
            encoder = None
            loop_ms = (time.monotonic() - loop_started) * 1000
            if server is not None:
                dependencies = server.served() + dependencies
        except (CDPError, TimeoutError, BrowserFault) as error:
            # Cancelling tears the browser down under a running DevTools call: that failure is the cancel.
            _check_cancel(cancel)
            if isinstance(error, BrowserFault):
                raise
            raise BrowserFault(f"browser failed: {error}") from None
        finally:
            if encoder is not None:
                encoder.abort()
            if source is not None:
                source.discard()
            if server is not None:
                server.close()
    return RenderStats(
        profile=report_profile(profiler, frame_count, f"{output_path.name} {capture.mode}"),
        frames=frame_count,
        duration_ms=(time.monotonic() - started) * 1000,
        output_path=os.fspath(output_path),
        capture=capture.mode,
        fast_forward_ms=ff_ms,
        loop_ms=loop_ms,
        browser=executable.path,
        dependencies=dependencies,
        media_seen=len(media.elements) if media is not None else None,
        media=media,
        failed_loads=failed,
        seam_files=seam_sink.written if seam_sink is not None else {},
    )
