"""The network guard of a rendered page: a composition must not reach the worker's own services.

A worker renders compositions it did not write. Without a guard a page could `fetch()` the cloud metadata
service (169.254.169.254, `metadata.google.internal`: the worker's credentials) or anything listening on
the worker's loopback. With the guard on, every request of the page pauses in CDP's Fetch domain and is
failed (`AccessDenied`: the page sees a network error) when its host is

* a loopback, link-local or unspecified address (literal, or what the name resolves to), or
* `localhost`, `*.localhost`, `metadata.google.internal`, `metadata`,

unless it is the origin of the composition server the render started for this page (on 127.0.0.1), or a host
in `HELIOS_NETGUARD_ALLOW` (space or comma separated, `host` or `host:port`). Everything else
continues untouched. Names are resolved off the CDP reader thread (a small pool) and cached per host.
A composition given as a URL gets no exception for its own origin: a job whose input is
`http://169.254.169.254/...` fails to load instead of rendering the worker's credentials into a video.

That pause only sees the page's own requests, and a name checked here may resolve differently when
Chromium connects: a browser launched with the guard on therefore also sends all its traffic through
:func:`egress_for_launch`'s proxy (render/egress.py), which covers service workers, workers and WebSockets
and pins every name to the address it checked. Both trust the page's own server and the allow list.

The guard is on when `HELIOS_NETGUARD` is `on` (the HTTP worker, the Lambda handler and `helios worker run`
set it unless already set); `off` or unset leaves local renders as they were. :func:`guard_page` is the one
hook `render/session.py` calls after opening a tab.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from helios_kit.render import hosts

if TYPE_CHECKING:
    from helios_kit.render.egress import EgressProxy

log = logging.getLogger("helios.render.netguard")

ENV_VAR = "HELIOS_NETGUARD"
ALLOW_ENV_VAR = "HELIOS_NETGUARD_ALLOW"
BLOCKED_NAMES = hosts.BLOCKED_NAMES
_GUARDED_SCHEMES = ("http", "https", "ws", "wss")
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="helios-netguard")


class GuardPolicy(BaseModel):
    """What the guard lets a page reach besides the public internet."""

    enabled: bool = False
    allowed: list[str] = Field(default_factory=list, description="`host` or `host:port` always allowed.")

    @classmethod
    def from_env(cls) -> GuardPolicy:
        raw = os.environ.get(ALLOW_ENV_VAR, "")
        enabled = os.environ.get(ENV_VAR, "").strip().lower() in ("1", "on", "true", "yes")
        return cls(enabled=enabled, allowed=[h.lower() for h in raw.replace(",", " ").split() if h])


def enable_for_workers() -> None:
    """Turn the guard on in this process unless the environment already says (worker entry points)."""
    os.environ.setdefault(ENV_VAR, "on")


class _HostCheck:
    """Cached verdicts: is a host internal (loopback, link-local, metadata)?"""

    def __init__(self) -> None:
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()

    def internal(self, host: str) -> bool:
        name = host.strip("[]").lower().rstrip(".")
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        verdict = hosts.internal_host(name)
        with self._lock:
            self._cache[name] = verdict
        return verdict


def egress_for_launch(policy: GuardPolicy | None = None) -> EgressProxy | None:
    """The pinning proxy a browser launched now sends all its traffic through (render/egress.py), or None
    when the guard is off. Names are resolved, checked and connected to by the proxy, so a name that
    resolves to an internal address when Chromium would have connected (DNS rebinding) is never used, and
    service workers, workers and WebSockets, which the page's Fetch guard does not see, are guarded too."""
    if not (policy or GuardPolicy.from_env()).enabled:
        return None
    from helios_kit.render.egress import EgressProxy  # asyncio and the proxy load only when the guard is on

    return EgressProxy(allowed=lambda: set(GuardPolicy.from_env().allowed))


class PageGuard:
    """Decides every paused request of one page; counts what it blocked."""

    def __init__(self, page: Any, page_url: str, policy: GuardPolicy, *, own_server: bool = True) -> None:
        self.page = page
        #: The composition server's origin (trusted); None for a page opened from a URL the job named.
        self.own = _origin(page_url) if own_server else None
        self.allowed = set(policy.allowed)
        self.hosts = _HostCheck()
        self.blocked: list[str] = []

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in _GUARDED_SCHEMES:
            return True
        host = (parts.hostname or "").lower()
        port = parts.port or _default_port(parts.scheme)
        if f"{host}:{port}" == self.own or host in self.allowed or f"{host}:{port}" in self.allowed:
            return True
        return not self.hosts.internal(host)

    def on_event(self, method: str, params: dict[str, Any], session_id: str | None) -> None:
        if method != "Fetch.requestPaused" or session_id != self.page.session_id:
            return
        _POOL.submit(self._decide, params.get("requestId"), params.get("request", {}).get("url", ""))

    def _decide(self, request_id: str, url: str) -> None:
        try:
            if self.allows(url):
                self.page.send_async("Fetch.continueRequest", {"requestId": request_id})
                return
            self.blocked.append(url)
            log.warning("blocked a request of the composition to an internal address: %s", url)
            self.page.send_async("Fetch.failRequest", {"requestId": request_id, "errorReason": "AccessDenied"})
        except Exception as error:  # the page is gone: nothing to answer
            log.debug("netguard could not answer %s: %s", url, error)


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def _origin(url: str) -> str:
    """`host:port` of a URL (the port its scheme implies when none is given)."""
    parts = urlsplit(url)
    return f"{(parts.hostname or '').lower()}:{parts.port or _default_port(parts.scheme)}"


def guard_page(
    page: Any, page_url: str, policy: GuardPolicy | None = None, *, own_server: bool = True
) -> PageGuard | None:
    """Install the guard on a freshly opened page (before it navigates); None when the guard is off.
    `own_server`: `page_url` is the render's own composition server (its origin is trusted)."""
    policy = policy or GuardPolicy.from_env()
    proxy = getattr(page.browser, "egress", None)
    if not policy.enabled:
        if proxy is not None and own_server:  # a browser launched guarded, rendering unguarded: its server
            proxy.trust(_origin(page_url), page.target_id)
        return None
    guard = PageGuard(page, page_url, policy, own_server=own_server)
    if proxy is not None and guard.own is not None:
        proxy.trust(guard.own, page.target_id)
    page.browser.cdp.add_listener(guard.on_event)
    page.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
    return guard
