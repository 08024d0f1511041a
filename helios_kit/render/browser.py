"""Find and launch a headless Chromium, and talk to it over the DevTools protocol (CDP) on a pipe.

We speak CDP directly over ``--remote-debugging-pipe`` (fds 3 and 4, NUL-separated JSON) instead of going
through Playwright's driver: one hop less per screenshot, no dependency on the Chromium build Playwright
expects, and full control of the process tree. Chromium runs in its own process group with
``PR_SET_PDEATHSIG`` so it dies with us; :meth:`Browser.close` kills the whole group, so no orphan survives a
success, a failure or a cancel.

Finder order: ``HELIOS_CHROMIUM`` (a path), then Playwright's managed Chromium (headless shell first) when
installed, then system ``chromium-headless-shell``, ``chromium``, ``chromium-browser``, ``google-chrome``.
The old headless mode (``chromium-headless-shell``) takes CDP screenshots about 1.45x faster than the new
headless mode at 1280x720; the compositor flags that make ``chromium`` flush every stage before a capture
break ``Page.captureScreenshot`` in the headless shell, so they are only passed to ``chromium``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import itertools
import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from helios_kit.errors import BrowserFault, RenderError
from helios_kit.render import netguard

INSTALL_HINT = (
    "no Chromium found: install one (apt-get install chromium-headless-shell, or "
    "`playwright install chromium`) or set HELIOS_CHROMIUM=/path/to/chrome"
)

#: Chromium's stderr, in its profile folder (a failed launch's message quotes its last line).
STDERR_LOG = "chromium-stderr.log"

#: Flags every launch gets: headless as root, no sandbox, no GPU, no network except what the page asks of
#: 127.0.0.1, no background traffic.
BASE_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--font-render-hinting=none",
    "--autoplay-policy=no-user-gesture-required",
    # WebGL without a GPU: ANGLE on SwiftShader.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    # Raster tiles of 512x512 CSS pixels instead of 256x256: a frame's layers are replayed once per tile, and
    # here every frame is rasterized. Titles in 2 lanes, alternating: 1280x720 2.95 -> 2.84 s (4 rounds),
    # 1920x1080 5.21 -> 4.86 s (2 rounds). Viewport-wide tiles (GPU raster's shape) were faster at 720p and
    # 11% slower at 1080p. Pixels change too: on titles 21% of them by one level (gradients), 0.001% by more.
    "--default-tile-width=512",
    "--default-tile-height=512",
    # The GPU process (viz: compositing, screenshots; SwiftShader for WebGL) as a thread of the browser
    # process: one process less per launch and no IPC hop for each frame's picture. 8 alternating rounds in
    # 2 lanes: helios-counter 1.25 -> 1.17 s, titles 2.46 -> 2.42 s; the outputs are byte-identical.
    "--in-process-gpu",
)

#: Only for the new headless mode (`chromium`): without them the first capture after load can be a stale
#: compositor frame. In the headless shell they break Page.captureScreenshot.
FULL_CHROME_FLAGS = ("--run-all-compositor-stages-before-draw", "--disable-threaded-animation")

#: Only for the headless shell: unthrottled frame production (~25% more screenshots/s at 1280x720 here).
#: In the new headless mode the same flags cut screenshot throughput to ~3/s, so never there.
SHELL_FLAGS = ("--disable-frame-rate-limit", "--disable-gpu-vsync")

#: Headless shell driven frame by frame with HeadlessExperimental.beginFrame (each frame is produced on
#: request and can carry its own screenshot): about 2x the frames/s of Page.captureScreenshot here.
#: The set puppeteer-capture and HyperFrames launch with (surface synchronization included: the browser
#: waits for the renderer's surface of the current size instead of drawing without it).
BEGIN_FRAME_FLAGS = (
    "--deterministic-mode",
    "--enable-begin-frame-control",
    "--disable-new-content-rendering-timeout",
    "--run-all-compositor-stages-before-draw",
    "--disable-threaded-animation",
    "--disable-threaded-scrolling",
    "--disable-checker-imaging",
    "--disable-image-animation-resync",
    "--enable-surface-synchronization",
)

#: frameTimeTicks of a page's first BeginFrame (ms); each later one is an interval further (as
#: puppeteer-capture and HyperFrames do: explicit, strictly increasing, never the wall clock).
FIRST_FRAME_TICKS = 1000.0
BEGIN_FRAME_INTERVAL_MS = 1000 / 60


@dataclass(frozen=True)
class BrowserExecutable:
    """A Chromium binary and whether it is the old headless shell (no --headless=new needed)."""

    path: str
    headless_shell: bool


def _is_shell(path: str) -> bool:
    return "headless-shell" in os.path.basename(path) or "headless_shell" in os.path.basename(path)


def _playwright_candidates() -> list[str]:
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or os.path.expanduser("~/.cache/ms-playwright")
    patterns = (
        "chromium_headless_shell-*/chrome-*/headless_shell",
        "chromium-*/chrome-linux*/chrome",
        "chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/Chromium",
    )
    found: list[str] = []
    for pattern in patterns:
        found.extend(sorted(glob.glob(os.path.join(root, pattern)), reverse=True))
    return found


def find_browser() -> BrowserExecutable:
    """The Chromium to use, or a RenderError saying how to install one."""
    env = os.environ.get("HELIOS_CHROMIUM")
    if env:
        path = shutil.which(env) or env
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RenderError(f"HELIOS_CHROMIUM={env}: not an executable file")
        return BrowserExecutable(path, _is_shell(path))
    for path in _playwright_candidates():
        if os.access(path, os.X_OK):
            return BrowserExecutable(path, _is_shell(path))
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return BrowserExecutable(path, _is_shell(path))
    raise RenderError(INSTALL_HINT)


def _child_setup() -> None:  # pragma: no cover - runs in the child
    """New process group, and die when the parent dies (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _place_pipe_fds(cmd_read: int, reply_write: int) -> None:  # pragma: no cover - runs in the child
    """Put the CDP pipe ends on fds 3 and 4, inheritable, and close every fd above them.

    Through copies numbered 5 or more: a copy made with ``os.dup`` takes the lowest free number, which is 3
    when fd 3 is free at fork time (another thread closed a file; the pipes were made at 4 and up), and
    ``dup2`` of 3 onto 3 keeps its close-on-exec flag, so Chromium started with no fd 3 ("Remote debugging
    pipe file descriptors are not open") now and then when two browsers launched at once."""
    read_copy = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 5)
    write_copy = fcntl.fcntl(reply_write, fcntl.F_DUPFD, 5)
    os.dup2(read_copy, 3)  # dup2 onto another number makes the new fd inheritable
    os.dup2(write_copy, 4)
    os.closerange(5, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)


#: The one thread that forks every guarded child (see :func:`spawn`); started on first use.
_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` on one long-lived thread of this process.

    ``PR_SET_PDEATHSIG`` (set in the child) fires when the *thread* that forked the child exits, not only the
    process: a browser launched from a short-lived thread (a web server's pool thread that idles out, a
    thread that keeps a WarmBrowser for later renders) was SIGKILLed as soon as that thread ended. Children
    forked on this thread die with the process, as intended, and only then."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="helios-spawn")
    return _SPAWNER.submit(subprocess.Popen, argv, **kwargs).result()


def popen_guarded(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that is killed if this process dies."""
    return spawn(argv, preexec_fn=_child_setup, **kwargs)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Popen.wait(timeout) that returns as the child exits: Python's own sleeps between polls, doubling up
    to 50 ms, which added ~25 ms on average to every ffmpeg tail and browser close a render waits for.
    Blocks on a pidfd (Linux 5.3+) instead; elsewhere falls back to Popen.wait. Raises TimeoutExpired as
    Popen.wait does."""
    if proc.returncode is not None or not hasattr(os, "pidfd_open"):
        return proc.wait(timeout=timeout)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or no pidfd here
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()  # not select.select: it cannot take a descriptor numbered 1024 or more
        poller.register(pidfd, select.POLLIN)
        exited = poller.poll(math.ceil(timeout * 1000))
    finally:
        os.close(pidfd)
    if not exited:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait(timeout=timeout)


def kill_group(proc: subprocess.Popen[bytes] | None, grace_s: float = 0.5) -> None:
    """Terminate a process and everything in its process group; wait for it."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None and pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait_exit(proc, grace_s)
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        wait_exit(proc, 5)


class CDPError(Exception):
    """A CDP command answered with an error."""


class CDPConnection:
    """CDP over a pipe pair: send commands (optionally to a session), get results, subscribe to events."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[str, dict[str, Any], str | None], None]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._thread.start()

    def add_listener(self, listener: Callable[[str, dict[str, Any], str | None], None]) -> None:
        """Call ``listener(method, params, session_id)`` for every event (from the reader thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, dict[str, Any], str | None], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def send_async(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> Future[dict[str, Any]]:
        message_id = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        with self._lock:
            if self.closed:
                raise CDPError("browser connection closed")
            self._pending[message_id] = future
        data = json.dumps(message).encode() + b"\0"
        try:
            with self._write_lock:
                self._writer.write(data)
        except OSError as error:
            with self._lock:
                self._pending.pop(message_id, None)
            raise CDPError(f"browser connection closed ({error})") from None
        return future

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout: float | None = 60.0,
    ) -> dict[str, Any]:
        future = self.send_async(method, params, session_id)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise TimeoutError(f"CDP {method} did not answer within {timeout:g} s") from None

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._reader.read(1 << 20)
                if not chunk:
                    break
                buffer += chunk
                while True:
                    end = buffer.find(b"\0")
                    if end < 0:
                        break
                    raw, buffer = buffer[:end], buffer[end + 1 :]
                    self._dispatch(json.loads(raw))
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self.closed = True
                pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(CDPError("browser connection closed"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                future = self._pending.pop(message["id"], None)
            if future is None:
                return
            if "error" in message:
                future.set_exception(CDPError(message["error"].get("message", str(message["error"]))))
            else:
                future.set_result(message.get("result", {}))
            return
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(message.get("method", ""), message.get("params", {}), message.get("sessionId"))

    def close(self) -> None:
        for handle in (self._writer, self._reader):
            with contextlib.suppress(OSError):
                handle.close()


class Browser:
    """A running headless Chromium with a CDP pipe. Use as a context manager; close() kills its group."""

    def __init__(
        self,
        executable: BrowserExecutable | None = None,
        extra_flags: tuple[str, ...] = (),
        *,
        begin_frame_control: bool = False,
    ) -> None:
        started = time.perf_counter()
        self.executable = executable or find_browser()
        self.begin_frame_control = begin_frame_control and self.executable.headless_shell
        self.egress = netguard.egress_for_launch()  # guarded: all traffic through a pinning proxy
        extra_flags = (*extra_flags, *(self.egress.chromium_flags() if self.egress else ()))
        self._profile = tempfile.mkdtemp(prefix="helios-chromium-")
        flags = [*BASE_FLAGS, *extra_flags, f"--user-data-dir={self._profile}", "--remote-debugging-pipe"]
        if not self.executable.headless_shell:
            flags = ["--headless=new", *FULL_CHROME_FLAGS, *flags]
        elif self.begin_frame_control:
            flags = ["--headless", *BEGIN_FRAME_FLAGS, *flags]
        else:
            flags = ["--headless", *SHELL_FLAGS, *flags]
        # fds 3 (browser reads commands) and 4 (browser writes replies), as --remote-debugging-pipe expects.
        cmd_read, cmd_write = os.pipe()
        reply_read, reply_write = os.pipe()
        # No start-up tab: every tab a render uses is made with Target.createTarget, and the about:blank one
        # the command line used to open cost a renderer process at every launch (~30 ms of CPU in the shell).
        argv = [self.executable.path, *flags, "--no-startup-window"]

        def setup() -> None:  # pragma: no cover - runs in the child
            _place_pipe_fds(cmd_read, reply_write)
            _child_setup()

        # Chromium's own words (kept in the profile, dropped with it) name why a launch failed.
        self._stderr_path = os.path.join(self._profile, STDERR_LOG)
        try:
            with open(self._stderr_path, "wb") as stderr:
                self.process: subprocess.Popen[bytes] = spawn(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    preexec_fn=setup,
                    close_fds=False,  # setup() keeps exactly fds 3 and 4 and closes the rest
                )
        except OSError as error:
            shutil.rmtree(self._profile, ignore_errors=True)
            if self.egress is not None:
                self.egress.close()
            raise RenderError(f"cannot start Chromium {self.executable.path}: {error.strerror}") from None
        finally:
            os.close(cmd_read)
            os.close(reply_write)
        self.cdp = CDPConnection(cmd_write, reply_read)
        try:
            self.version = self.cdp.send("Browser.getVersion", timeout=30)
        except (TimeoutError, CDPError) as error:
            said = self._last_words()
            self.close()
            raise BrowserFault(f"Chromium {self.executable.path} did not start: {error}{said}") from None
        #: Seconds from launch until the browser answered over CDP.
        self.launch_s = time.perf_counter() - started

    def _last_words(self) -> str:
        """How Chromium ended (exit status, last line it wrote to stderr), for a failed launch's message."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait_exit(self.process, 0.5)
        said = []
        if self.process.returncode is not None:
            said.append(f"exit status {self.process.returncode}")
        with contextlib.suppress(OSError), open(self._stderr_path, "rb") as stderr:
            lines = [line.strip() for line in stderr.read()[-4096:].decode(errors="replace").splitlines()]
            said += [line for line in lines if line][-1:]
        return f" ({'; '.join(said)})" if said else ""

    def new_page(self, width: int, height: int, *, browser_context_id: str | None = None) -> Page:
        """A fresh tab of exactly width x height CSS pixels at device scale 1, with a flat CDP session (in
        the given browser context, else the default one)."""
        params: dict[str, Any] = {"url": "about:blank"}
        if browser_context_id:
            params["browserContextId"] = browser_context_id
        if self.executable.headless_shell:
            params.update(width=width, height=height)
        if self.begin_frame_control:
            params["enableBeginFrameControl"] = True
        target = self.cdp.send("Target.createTarget", params)
        attached = self.cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        return Page(self, target["targetId"], attached["sessionId"], width, height)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        """Kill Chromium and its children, drop the profile."""
        with contextlib.suppress(Exception):
            if self.process.poll() is None and not self.cdp.closed:
                self.cdp.send_async("Browser.close")
                wait_exit(self.process, 0.5)
        kill_group(self.process, grace_s=0.2)
        self.cdp.close()
        if self.egress is not None:
            self.egress.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: send commands to its session, wait for its events."""

    def __init__(self, browser: Browser, target_id: str, session_id: str, width: int, height: int) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.width = width
        self.height = height
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._frame_ticks = FIRST_FRAME_TICKS - BEGIN_FRAME_INTERVAL_MS
        browser.cdp.add_listener(self._on_event)

    def _on_event(self, method: str, params: dict[str, Any], session_id: str | None) -> None:
        if session_id != self.session_id:
            return
        with self._cond:
            self._events.setdefault(method, []).append(params)
            self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 60.0) -> dict[str, Any]:
        return self.browser.cdp.send(method, params, self.session_id, timeout=timeout)

    def send_async(self, method: str, params: dict[str, Any] | None = None) -> Future[dict[str, Any]]:
        return self.browser.cdp.send_async(method, params, self.session_id)

    def detach(self) -> None:
        """Stop recording this tab's events (a tab a long-lived browser no longer uses)."""
        self.browser.cdp.remove_listener(self._on_event)

    def clear_events(self) -> None:
        """Forget the events recorded so far (a reused tab starts its next render with none)."""
        with self._cond:
            self._events.clear()

    def events(self, method: str) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events.get(method, []))

    def wait_event(
        self,
        method: str,
        timeout: float,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        abort: Callable[[], bool] | None = None,
    ) -> dict[str, Any] | None:
        """The first recorded event `method` matching `predicate`, waiting up to `timeout` s (None if none)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for params in self._events.get(method, []):
                    if predicate is None or predicate(params):
                        return params
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.browser.cdp.closed or (abort is not None and abort()):
                    return None
                self._cond.wait(min(remaining, 0.1))

    @property
    def begin_frame_control(self) -> bool:
        return self.browser.begin_frame_control

    def begin_frame(self, screenshot: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Produce and draw one frame (begin-frame mode); with `screenshot`, the result may hold
        screenshotData (only when the frame has damage: a frame identical to the last drawn one has none).
        Capture asks every drawing frame for a picture, so the last picture is always what is displayed."""
        params: dict[str, Any] = {"frameTimeTicks": self._next_ticks(), "interval": BEGIN_FRAME_INTERVAL_MS}
        if screenshot is not None:
            params["screenshot"] = screenshot
        return self.send("HeadlessExperimental.beginFrame", params, timeout=timeout)

    def pump(self, timeout: float = 10.0) -> dict[str, Any]:
        """A frame that runs rendering's side effects (layout, animations, promises waiting for a frame)
        but draws nothing (noDisplayUpdates): frames produced while waiting for the page never change
        the display, so the next capture frame has all the damage and its picture."""
        params = {"frameTimeTicks": self._next_ticks(), "interval": BEGIN_FRAME_INTERVAL_MS, "noDisplayUpdates": True}
        return self.send("HeadlessExperimental.beginFrame", params, timeout=timeout)

    def _next_ticks(self) -> float:
        self._frame_ticks += BEGIN_FRAME_INTERVAL_MS
        return self._frame_ticks

    def wait_pumping(self, future: Future[dict[str, Any]], timeout: float | None) -> dict[str, Any]:
        """Wait for a command; in begin-frame mode keep producing frames meanwhile (promises that wait for
        a rendering opportunity, like animation.ready or requestVideoFrameCallback, need them)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first_wait = 0.02
        while True:
            try:
                return future.result(timeout=first_wait if self.begin_frame_control else timeout)
            except FutureTimeout:
                if not self.begin_frame_control or (deadline is not None and time.monotonic() > deadline):
                    raise TimeoutError(f"page did not answer within {timeout:g} s") from None
            first_wait = 0.002
            with contextlib.suppress(CDPError, TimeoutError):
                self.pump(timeout=10)

    def evaluate(self, expression: str, timeout: float | None = 60.0, await_promise: bool = True) -> Any:
        """Evaluate JS in the page and return its JSON value; a thrown error becomes CDPError(message)."""
        future = self.send_async(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": await_promise, "returnByValue": True}
        )
        result = self.wait_pumping(future, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            exception = details.get("exception", {})
            raise CDPError(exception.get("description") or details.get("text", "evaluation failed"))
        return result.get("result", {}).get("value")
