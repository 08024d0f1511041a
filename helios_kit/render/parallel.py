"""One render on several cores: N browsers (lanes) capture interleaved frames of one range into one encoder.

A render captures in one browser and encodes in one ffmpeg, which keeps about 1.2 of this machine's cores
busy: a begin-frame capture runs the page's paint, raster, compositing and JPEG encoding one after another.
Virtual time makes frame n a pure function of the steps 0..n, captured or not (the same contract that lets a
chunk fast-forward to its first frame), so `helios render` can open the composition in N browsers at once
and let each capture whichever frame is next (`render/frame_order.py`), stepping the others' frames without
capturing them. The images go to one ffmpeg in order: no parts to join, and no load imbalance between a
light first half and a heavy second half, which contiguous parts had (titles: 1.12x of one part with 2
contiguous parts, 1.27x with 2 lanes; see docs/ARCHITECTURE.md).

Each lane restarts once in a fresh browser with Page.captureScreenshot after a browser fault, as
`render_range` does, and carries on from the frames it had claimed; its images delivered so far stay.
A canvas page (`auto` capture) renders in one lane: its capture already draws and encodes on every core.
"""

from __future__ import annotations

import collections
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from helios_kit.composition.deps import Dependency
from helios_kit.composition.media import MediaScan
from helios_kit.errors import BrowserFault
from helios_kit.render.browser import BrowserExecutable, CDPError, Page
from helios_kit.render.capture import CanvasCapture, DomCapture, FrameError, choose_capture, fallback_level
from helios_kit.render.encode import FrameEncoder, ImageFormat, is_lossless
from helios_kit.render.frame_order import FrameOrder
from helios_kit.render.load_failures import failed_loads
from helios_kit.render.page import RenderCancelled
from helios_kit.render.profile import new_profiler, tree_cpu_s
from helios_kit.render.progress import RenderProgress
from helios_kit.render.server import CompositionServer
from helios_kit.render.session import (
    DEFAULT_TIMEOUT_S,
    RenderStats,
    fast_forward,
    finish_encoder,
    frame_error,
    image_encoder,
    local_html,
    preflight,
    prop_urls,
    render_range,
    report_profile,
    shown_media,
    tab_key,
    url_dependencies,
    use_begin_frame,
)
from helios_kit.render.warm import BrowserSource, TabKey
from helios_kit.spec import RenderConfig

log = logging.getLogger("helios.render")

#: Frames per extra browser before it pays for its launch and page load (about 0.3 s of CPU on 2 cores):
#: titles at 60 frames ran 1.27x faster in 2 lanes than in 1 (see auto_parts).
MIN_FRAMES_PER_PART = 30
#: Frames a lane steps over without capture in the same call that steps its next frame; a longer way (a
#: lane's first frame, far into the range) is fast-forwarded in batches first.
FOLDED_STEPS = 16
#: Frames a lane may capture ahead of the one the encoder waits for, per lane (bounds the images held).
WINDOW_PER_LANE = 8


def auto_parts(frame_count: int, cpus: int | None = None, capture: str = "auto") -> int:
    """How many lanes `helios render` uses by default: one per core, each with enough frames to pay off.

    Canvas capture draws and encodes inside the page on every core it can get (measured on 2 cores with
    the particles example: 2 parts ran at 0.89x-0.95x of 1 part), so an explicit `--capture canvas` stays
    in one lane; with `auto`, a page found to be one canvas renders in one lane of the ones started.
    A composition with a ``<video>`` splits like any other page: the timeline example (180 frames) ran
    1.37-1.39x faster in 2 lanes than in 1.
    """
    if capture == "canvas":
        return 1
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(cpus, frame_count // MIN_FRAMES_PER_PART))


def render_parallel(
    config: RenderConfig,
    *,
    input_location: str,
    start_frame: int,
    frame_count: int,
    output_path: pathlib.Path,
    parts: int,
    quiet: bool = True,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RenderStats:
    """Render [start_frame, start_frame + frame_count) into `output_path` in `parts` browsers at once."""
    if parts <= 1 or frame_count < 2:
        return render_range(
            config,
            input_location=input_location,
            start_frame=start_frame,
            frame_count=frame_count,
            output_path=output_path,
            progress=progress,
            cancel=cancel,
            quiet=quiet,
            timeout_s=timeout_s,
        )
    started = time.monotonic()
    output_path = pathlib.Path(output_path).expanduser().absolute()
    url, html_file, executable = preflight(config, input_location, start_frame, frame_count, output_path)
    server = CompositionServer(html_file.parent) if html_file is not None else None
    try:
        entry = server.url_for(html_file) if server is not None and html_file is not None else url
        assert entry is not None
        lanes = _Lanes(config, input_location, entry, server, executable, min(parts, frame_count), timeout_s)
        with RenderProgress(output_path.name, frame_count, quiet=quiet or progress is not None) as reporter:
            stats = lanes.render(start_frame, frame_count, output_path, cancel, progress or reporter)
    finally:
        if server is not None:
            server.close()
    return stats.model_copy(update={"duration_ms": (time.monotonic() - started) * 1000})


@dataclass
class _LaneResult:
    """What one lane saw: the network responses it recorded, and the media when it stepped to the end."""

    dependencies: list[Dependency] = field(default_factory=list)
    media: MediaScan | None = None
    failed_loads: list[str] = field(default_factory=list)


class _Lanes:
    """The lanes of one render: a shared composition server and encoder, a browser per lane."""

    def __init__(
        self,
        config: RenderConfig,
        input_location: str,
        url: str,
        server: CompositionServer | None,
        executable: BrowserExecutable,
        count: int,
        timeout_s: float,
    ) -> None:
        self.config = config
        self.url = url
        self.server = server
        self.executable = executable
        self.count = count
        self.timeout_s = timeout_s
        self.named = prop_urls(config.props)
        self.begin_frame = use_begin_frame()
        self.local = server is not None
        self.input_location = input_location
        self.fmt: ImageFormat = "png" if is_lossless(config.video_codec, config.crf) else "jpeg"
        self.profiler = new_profiler()  # HELIOS_PROFILE=1: one profile over every lane
        self.mode: str | None = None  # the capture every lane uses, decided by the first page loaded
        self._deciding = threading.Lock()
        #: Set once the capture is decided: a page that may be one canvas (its HTML draws on a canvas) starts
        #: the other lanes only then, so a canvas page does not pay for browsers it will not use.
        self.decided = threading.Event()
        requested = str(getattr(config.capture, "value", config.capture))
        if requested == "dom" or not _may_be_canvas(input_location):
            self.decided.set()

    def key(self, begin_frame: bool) -> TabKey:
        return tab_key(self.executable, begin_frame, self.config, self.input_location, local=self.local)

    def render(
        self,
        start_frame: int,
        frame_count: int,
        output_path: pathlib.Path,
        cancel: threading.Event | None,
        progress: Callable[[int, int], None] | None,
    ) -> RenderStats:
        abort = threading.Event()
        order = FrameOrder(start_frame, frame_count, WINDOW_PER_LANE * self.count, abort)
        watcher = _mirror_cancel(cancel, abort, order)
        results = [_LaneResult() for _ in range(self.count)]
        threads = [
            threading.Thread(target=self._lane, args=(i, order, abort, results[i]), name=f"helios-lane-{i}")
            for i in range(self.count)
        ]
        loop_started = time.monotonic()
        encoder: FrameEncoder | None = None
        try:
            encoder = image_encoder(output_path, self.config, frame_count, self.fmt, self.profiler)
            for thread in threads:
                thread.start()
            self._encode(order, encoder, frame_count, progress)
            if self.profiler.active:  # reaped browsers would count as ffmpeg's CPU: close them first
                for thread in threads:
                    thread.join()
            finish_encoder(encoder, self.profiler)  # else while the lanes close their browsers
            for thread in threads:
                thread.join()
        except BaseException:
            abort.set()
            order.wake()
            for thread in threads:
                if thread.ident is not None:  # started
                    thread.join()
            if encoder is not None:
                encoder.abort()
            raise
        finally:
            abort.set()
            watcher.join()
        stats = self._stats(results, frame_count, output_path, (time.monotonic() - loop_started) * 1000)
        label = f"{output_path.name} {stats.capture}, {self.count} lanes"
        return stats.model_copy(update={"profile": report_profile(self.profiler, frame_count, label)})

    @staticmethod
    def _encode(
        order: FrameOrder, encoder: FrameEncoder, frame_count: int, progress: Callable[[int, int], None] | None
    ) -> None:
        """Feed the encoder every frame in order as the lanes deliver them (raises a lane's failure)."""
        for done in range(1, frame_count + 1):
            _frame, image = order.take()
            encoder.put(image)
            if progress is not None:
                progress(done, frame_count)

    def _stats(
        self, results: list[_LaneResult], frame_count: int, output_path: pathlib.Path, loop_ms: float
    ) -> RenderStats:
        served = self.server.served() if self.server is not None else []
        found = {dep.key: dep for dep in [*served, *(d for r in results for d in r.dependencies)]}
        media = next((r.media for r in results if r.media is not None), None)
        return RenderStats(
            frames=frame_count,
            duration_ms=0.0,
            output_path=os.fspath(output_path),
            capture=self.mode or "dom",
            loop_ms=loop_ms,
            browser=self.executable.path,
            dependencies=[found[key] for key in sorted(found)],
            media_seen=len(media.elements) if media is not None else None,
            media=media,
            failed_loads=list(dict.fromkeys(url for r in results for url in r.failed_loads)),
        )

    # ---- one lane ---------------------------------------------------------------------------------------
    def _lane(self, index: int, order: FrameOrder, abort: threading.Event, result: _LaneResult) -> None:
        """Capture claimed frames until none are left; one restart in a fresh screenshot browser on a fault."""
        owed: collections.deque[int] = collections.deque()  # claimed, image not delivered yet
        if index > 0 and not self._wait_decided(abort):
            return
        try:
            try:
                self._session(index, self.begin_frame, order, abort, owed, result)
            except BrowserFault as fault:
                if abort.is_set():
                    raise
                message = "%s; lane %d carries on in a fresh browser with Page.captureScreenshot"
                log.log(fallback_level(fault), message, fault, index)
                self._session(index, False, order, abort, owed, result)
        except RenderCancelled:
            order.wake()
        except BaseException as error:  # handed to the encoding thread, which raises it
            if abort.is_set() and isinstance(error, CDPError | TimeoutError | BrowserFault):
                return  # torn down because another lane failed or the render was cancelled
            order.fail(error)
        finally:
            self.decided.set()  # a first lane that failed before deciding must not hold the others

    def _wait_decided(self, abort: threading.Event) -> bool:
        """Wait until the capture is decided; False when this lane has nothing to do (canvas, or stopped)."""
        while not self.decided.wait(0.1):
            if abort.is_set():
                return False
        return self.mode != "canvas" and not abort.is_set()

    def _session(
        self,
        index: int,
        begin_frame: bool,
        order: FrameOrder,
        abort: threading.Event,
        owed: collections.deque[int],
        result: _LaneResult,
    ) -> None:
        source = BrowserSource()
        key = self.key(begin_frame)
        try:
            with self.profiler.phase("browser launch + page load"):
                page = source.open(key, self.executable, self.url, self.config, self.timeout_s, abort)
            capture = self._capture(index, page, order)
            if capture is not None:
                capture.profile = self.profiler
                position = self._capture_claims(index, page, capture, order, abort, owed)
                if position == order.stop:  # this lane stepped every frame to the end
                    result.media = shown_media(page, self.server, position, self.timeout_s)
                result.failed_loads = failed_loads(page, self.server.base_url if self.server is not None else None)
                if key.record_network:
                    result.dependencies = url_dependencies(page, None if self.local else self.url, self.named)
                if self.profiler.active:
                    self.profiler.add("cpu: browser (all processes)", tree_cpu_s(page.browser.process.pid))
        except (CDPError, TimeoutError) as error:
            raise BrowserFault(f"browser failed: {error}") from None
        finally:
            source.discard()

    def _capture(self, index: int, page: Page, order: FrameOrder) -> DomCapture | CanvasCapture | None:
        """The lane's capture: the first page loaded decides for all (`auto` on a canvas page: that lane
        renders alone); None when this lane has nothing to do."""
        with self._deciding:
            if self.mode is None:
                requested = str(getattr(self.config.capture, "value", self.config.capture))
                capture = choose_capture(page, requested, self.fmt, self.timeout_s)
                self.mode = capture.mode
                if capture.mode == "canvas":
                    order.go_solo(index)
                self.decided.set()
                return capture
        if self.mode == "canvas":
            return CanvasCapture(page, self.fmt, self.timeout_s) if order.go_solo(index) else None
        return choose_capture(page, "dom", self.fmt, self.timeout_s)

    def _capture_claims(
        self,
        index: int,
        page: Page,
        capture: DomCapture | CanvasCapture,
        order: FrameOrder,
        abort: threading.Event,
        owed: collections.deque[int],
    ) -> int:
        """Capture the frames owed from a failed session, then claimed ones; the frame the page is at."""
        redo = list(owed)
        owed.clear()
        position = 0
        while True:
            frame = redo.pop(0) if redo else order.claim(index)
            if frame is None:
                break
            try:
                if frame - position > FOLDED_STEPS:
                    fast_forward(page, position, frame, self.timeout_s, abort)
                    position = frame
                owed.append(frame)
                images = capture.frames(frame, steps_from=position)
            except FrameError as error:
                raise frame_error(error) from None
            position = frame + 1
            for image in images:
                order.deliver(owed.popleft(), image)
        for image in capture.flush():
            order.deliver(owed.popleft(), image)
        return position


def _may_be_canvas(input_location: str) -> bool:
    """Whether a composition's HTML may make it one canvas (a ``<canvas>`` tag or a ``getContext(`` call);
    True when it cannot be read here (a URL)."""
    html = local_html(input_location)
    return html is None or "<canvas" in html or "getcontext(" in html


def _mirror_cancel(cancel: threading.Event | None, abort: threading.Event, order: FrameOrder) -> threading.Thread:
    """A thread that sets `abort` (and wakes the lanes) when the caller's `cancel` is set; ends with `abort`."""

    def watch() -> None:
        while not abort.is_set():
            if cancel is not None and cancel.wait(0.1):
                abort.set()
                order.wake()
                return
            if cancel is None:
                abort.wait()

    thread = threading.Thread(target=watch, name="helios-render-cancel", daemon=True)
    thread.start()
    return thread
