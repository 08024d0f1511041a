"""Load a composition into a tab at virtual time 0: the one place a tab gets its size, the virtual-time shim
(props, seed, fps) and its navigation, for a fresh tab (cold render, probe) and a reused one (warm render).

A tab is set up with :func:`setup_tab` (size, the init script; returns the script's id so a reused tab can
drop it before the next render installs its own), then :func:`load_page` navigates and prepares frame 0.
:func:`open_page` does both on a new tab of a browser.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from helios_kit.errors import RenderError
from helios_kit.render import clock, netguard
from helios_kit.render.browser import Browser, CDPError, Page

if TYPE_CHECKING:
    from collections.abc import Mapping


class TabSettings(Protocol):
    """What a tab needs of a render's settings (a RenderConfig, or a probe's subset)."""

    width: int
    height: int
    fps: float
    seed: int

    @property
    def props(self) -> Mapping[str, Any]: ...


class RenderCancelled(RenderError):
    """The render was cancelled through its cancel event; nothing was written."""


def cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def check_cancel(cancel: threading.Event | None) -> None:
    if cancelled(cancel):
        raise RenderCancelled("render cancelled")


def setup_tab(page: Page, config: TabSettings, timeout: float, *, record_network: bool = False) -> str:
    """Size the tab and install the virtual-time shim for every new document; returns the script's id."""
    page.send("Page.enable")
    # Failed loads are logged here (render/load_failures.py); a reused tab starts with an empty log.
    page.send("Log.clear")
    page.send("Log.enable")
    if record_network:
        page.send("Network.enable")
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": config.width, "height": config.height, "deviceScaleFactor": 1, "mobile": False},
    )
    script = clock.init_script(config.fps, timeout, config.props, config.seed)
    added = page.send("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    return str(added.get("identifier", ""))


def guard_network(page: Page, url: str, *, own_server: bool) -> None:
    """Put the network guard (render/netguard.py: no metadata service, no loopback or link-local services of
    this machine unless allowed) in front of the page's next load, replacing a reused tab's earlier guard.
    `own_server`: `url` is the render's own composition server (trusted); a URL the job named is not."""
    earlier = getattr(page, "netguard", None)
    if earlier is not None:
        page.browser.cdp.remove_listener(earlier.on_event)
    page.netguard = netguard.guard_page(page, url, own_server=own_server)  # type: ignore[attr-defined]
    if earlier is not None and page.netguard is None:  # type: ignore[attr-defined]
        page.send("Fetch.disable")


def load_page(page: Page, url: str, timeout: float, cancel: threading.Event | None, *, own_server: bool = True) -> None:
    """Navigate a set-up tab to `url` and prepare frame 0 (fonts, images; RenderError naming what failed)."""
    guard_network(page, url, own_server=own_server)
    navigation = page.wait_pumping(page.send_async("Page.navigate", {"url": url}), timeout)
    if navigation.get("errorText"):
        raise RenderError(f"cannot load {url}: {navigation['errorText']}")
    loaded = wait_load(page, timeout, cancel)
    check_cancel(cancel)
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


def open_page(
    browser: Browser,
    url: str,
    config: TabSettings,
    timeout: float,
    cancel: threading.Event | None,
    *,
    record_network: bool = False,
    own_server: bool | None = None,
) -> Page:
    """A new tab at the render size with the virtual-time shim installed, loaded and prepared at t = 0.
    `record_network` keeps the page's network responses (see ``session.url_dependencies``); `own_server`
    says `url` is the render's own composition server (default: when the network is not recorded)."""
    page = browser.new_page(config.width, config.height)
    setup_tab(page, config, timeout, record_network=record_network)
    own = (not record_network) if own_server is None else own_server
    load_page(page, url, timeout, cancel, own_server=own)
    return page


def wait_load(page: Page, timeout: float, cancel: threading.Event | None) -> dict | None:
    """The load event; in begin-frame mode frames are produced while waiting (loading may need them)."""
    if not page.begin_frame_control:
        return page.wait_event("Page.loadEventFired", timeout, abort=lambda: cancelled(cancel))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cancelled(cancel):
        event = page.wait_event("Page.loadEventFired", 0.005)
        if event is not None:
            return event
        page.pump(timeout=timeout)
    return None
