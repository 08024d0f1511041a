"""Where a render gets its browser tab: a cold browser per render, or a warm one kept across renders.

``render_range(..., warm=WarmBrowser())`` keeps one Chromium across renders, and its tab when the next
render has the same composition, viewport and capture mode; otherwise the tab is closed with its browser
context and the next one opens in a fresh context. Between two renders on one tab the tab is reset so
nothing of the previous render leaks into the next (docs/ARCHITECTURE.md, "Warm browsers"):

- the previous render's init script (virtual clock, props, seed) is removed before the next is installed,
  and every render navigates a new document (page globals and the clock start over);
- after a render the tab goes to ``about:blank`` with its history reset and ``window.name`` cleared, and the
  previous origin's storage is cleared (``Storage.clearDataForOrigin`` "all": localStorage, sessionStorage,
  IndexedDB, Cache Storage, service workers), with every cookie and the HTTP cache;
- recorded CDP events of the previous render are dropped (load events, network responses).

A browser that died, hangs (does not answer within ``health_timeout_s``) or failed a render is closed and
the next render starts a new, cold one: a browser is reused only after a render that succeeded and a reset
that succeeded. One render at a time uses a WarmBrowser (others wait); ``close()`` ends it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from helios_kit.render.browser import Browser, BrowserExecutable, CDPError, Page
from helios_kit.render.page import TabSettings, load_page, open_page, setup_tab, wait_load

log = logging.getLogger("helios.render.warm")

#: Seconds a kept browser may take to answer before it counts as hung (then it is replaced).
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TabKey:
    """What must be equal for a tab to serve the next render: same browser mode, viewport, composition."""

    executable: str
    begin_frame: bool
    width: int
    height: int
    composition: str
    record_network: bool
    #: The page comes from the render's own composition server (trusted by the network guard); False for a
    #: composition loaded from a URL the job named.
    own_server: bool = True


class BrowserSource:
    """A cold source: every render starts its own browser, closed when the render ends."""

    def __init__(self) -> None:
        self._browser: Browser | None = None

    def open(
        self,
        key: TabKey,
        executable: BrowserExecutable,
        url: str,
        config: TabSettings,
        timeout: float,
        cancel: threading.Event | None,
    ) -> Page:
        """A tab with `url` loaded and prepared at t = 0; on failure, what it started is discarded."""
        try:
            self._browser = Browser(executable, begin_frame_control=key.begin_frame)
            return open_page(
                self._browser,
                url,
                config,
                timeout,
                cancel,
                record_network=key.record_network,
                own_server=key.own_server,
            )
        except BaseException:
            self.discard()
            raise

    def release(self, page: Page) -> None:
        """The render succeeded (its frames are all captured)."""
        self.discard()

    def discard(self) -> None:
        """The render failed or was cancelled: nothing of it is reused."""
        if self._browser is not None:
            self._browser.close()
            self._browser = None


@dataclass
class _Tab:
    page: Page
    key: TabKey
    context_id: str
    script_id: str = ""
    origin: str = ""


class WarmBrowser(BrowserSource):
    """One Chromium kept across renders (and its tab for the same composition), reset between them."""

    def __init__(self, *, health_timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        super().__init__()
        self.health_timeout_s = health_timeout_s
        self._tab: _Tab | None = None
        self._busy = threading.Lock()
        #: Browsers started and tabs reused so far (what a benchmark or a test can check).
        self.launches = 0
        self.tab_reuses = 0

    def open(
        self,
        key: TabKey,
        executable: BrowserExecutable,
        url: str,
        config: TabSettings,
        timeout: float,
        cancel: threading.Event | None,
    ) -> Page:
        self._busy.acquire()
        try:
            tab = self._tab_for(key, executable)
            tab.script_id = setup_tab(tab.page, config, timeout, record_network=key.record_network)
            tab.origin = _origin(url)
            load_page(tab.page, url, timeout, cancel, own_server=key.own_server)
            return tab.page
        except BaseException:
            self.discard()
            raise

    def release(self, page: Page) -> None:
        """Reset the tab for the next render; a reset that fails closes the browser (the next is cold)."""
        try:
            if self._tab is not None:
                _reset_tab(self._tab, self.health_timeout_s)
        except (CDPError, TimeoutError, OSError) as error:
            log.warning("warm browser: reset failed (%s); the next render starts a new browser", error)
            self._close_browser()
        finally:
            self._release_lock()

    def discard(self) -> None:
        self._close_browser()
        self._release_lock()

    def close(self) -> None:
        """End the kept browser (a later render starts a new one)."""
        with self._busy:
            self._close_browser()

    def __enter__(self) -> WarmBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The kept Chromium's process id (None when there is none)."""
        return self._browser.pid if self._browser is not None else None

    # -- internals -----------------------------------------------------------------------------------
    def _release_lock(self) -> None:
        with contextlib.suppress(RuntimeError):  # released twice (discard after release): harmless
            self._busy.release()

    def _close_browser(self) -> None:
        self._tab = None
        if self._browser is not None:
            self._browser.close()
            self._browser = None

    def _tab_for(self, key: TabKey, executable: BrowserExecutable) -> _Tab:
        """The kept tab when it fits `key`, else a new tab in a new browser context of a healthy browser."""
        browser = self._healthy_browser(key, executable)
        if self._tab is not None and self._tab.key == key:
            self.tab_reuses += 1
            return self._tab
        if self._tab is not None:
            self._tab.page.detach()
            with contextlib.suppress(CDPError, TimeoutError):
                browser.cdp.send("Target.disposeBrowserContext", {"browserContextId": self._tab.context_id}, timeout=10)
            self._tab = None
        self._tab = _new_tab(browser, key)
        return self._tab

    def _healthy_browser(self, key: TabKey, executable: BrowserExecutable) -> Browser:
        browser = self._browser
        if browser is not None and (browser.executable != executable or browser.begin_frame_control != key.begin_frame):
            self._close_browser()
        elif browser is not None and not _alive(browser, self._tab, self.health_timeout_s):
            log.warning("warm browser: Chromium %s died or hangs; starting a new one", browser.pid)
            self._close_browser()
        if self._browser is None:
            self._browser = Browser(executable, begin_frame_control=key.begin_frame)
            self.launches += 1
        return self._browser


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""


def _alive(browser: Browser, tab: _Tab | None, timeout: float) -> bool:
    """The process runs and both the browser and the kept tab answer within `timeout` s."""
    if browser.process.poll() is not None or browser.cdp.closed:
        return False
    try:
        browser.cdp.send("Browser.getVersion", timeout=timeout)
        if tab is not None:
            tab.page.evaluate("1", timeout=timeout)
    except (CDPError, TimeoutError):
        return False
    return True


def _new_tab(browser: Browser, key: TabKey) -> _Tab:
    """A tab of the key's size in a browser context of its own (its storage, cookies and cache)."""
    context_id = browser.cdp.send("Target.createBrowserContext", {"disposeOnDetach": False})["browserContextId"]
    page = browser.new_page(key.width, key.height, browser_context_id=context_id)
    return _Tab(page=page, key=key, context_id=context_id)


def _reset_tab(tab: _Tab, timeout: float) -> None:
    """Leave nothing of the render that just ended: its init script, document, history, storage, events.
    A failing step raises CDPError naming it."""
    page = tab.page
    if tab.script_id:  # before leaving: about:blank must not run the render's clock either
        _step(page, "Page.removeScriptToEvaluateOnNewDocument", {"identifier": tab.script_id}, timeout)
        tab.script_id = ""
    steps: list[tuple[str, dict[str, object]]] = []
    _step(page, "Runtime.evaluate", {"expression": "window.name = ''", "returnByValue": True}, timeout)
    page.clear_events()
    _step(page, "Page.navigate", {"url": "about:blank"}, timeout)
    if wait_load(page, timeout, None) is None:
        raise TimeoutError(f"about:blank did not load within {timeout:g} s")
    if tab.origin:
        steps.append(("Storage.clearDataForOrigin", {"origin": tab.origin, "storageTypes": "all"}))
    steps += [
        ("Network.clearBrowserCookies", {}),
        ("Network.clearBrowserCache", {}),
        ("Page.resetNavigationHistory", {}),
    ]
    for method, params in steps:
        _step(page, method, params, timeout)
    page.clear_events()
    tab.origin = ""


def _step(page: Page, method: str, params: dict[str, object], timeout: float) -> None:
    try:
        page.wait_pumping(page.send_async(method, params), timeout)
    except CDPError as error:
        raise CDPError(f"{method}: {error}") from None
