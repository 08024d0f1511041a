"""A page a worker renders cannot reach the worker's metadata service or loopback services (render/netguard):
real Chromium renders a tiny composition whose script tries to read a loopback "metadata" server (a
synchronous XHR during load, so the attempt happens before frame 0); with the guard on the server never
sees a request and the render still succeeds; with the guard off (the control) it does see one, so the
test can fail. Plus the guard's host rules (property-based).

Then what the page's Fetch guard cannot see (render/egress.py's pinning proxy): a service worker, a
WebSocket, a dedicated worker, an <img> and an <iframe> aiming at the stand-in, each with an unguarded
control that reaches it; and DNS rebinding: a name Chromium's resolver maps to 127.0.0.1
(`--host-resolver-rules`) reaches the stand-in unguarded, and with the guard the proxy resolves the name
itself and connects only to the address it checked."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fakes.loopback import LoopbackHTTPServer
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.render.netguard import GuardPolicy, PageGuard
from helios_kit.spec import RenderConfig

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>html,body{margin:0;background:#123}</style>
</head><body><script>
  // the render waits for requests in flight before frame 0, so the attempt is made before the first frame
  fetch("METADATA_URL").then(r => r.text()).then(t => { document.body.dataset.leaked = t; })
    .catch(() => { document.body.dataset.leaked = "blocked"; });
</script></body></html>
"""


class MetadataServer:
    """A loopback stand-in for 169.254.169.254 that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                owner.requests.append(self.path)
                body = b"SECRET-TOKEN"
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_OPTIONS = _answer

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/computeMetadata/v1/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer()
    try:
        yield server
    finally:
        server.close()


def _render(tmp_path: Path, metadata: MetadataServer, name: str):
    from helios_kit.render import render_range

    folder = tmp_path / name
    folder.mkdir()
    (folder / "index.html").write_text(PAGE.replace("METADATA_URL", metadata.url))
    config = RenderConfig(input="index.html", width=96, height=64, fps=10, frame_count=2)
    return render_range(
        config, input_location=str(folder / "index.html"), start_frame=0, frame_count=2, output_path=folder / "o.mp4"
    )


@pytest.mark.render
def test_page_cannot_reach_loopback_metadata(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    stats = _render(tmp_path, metadata, "guarded")
    assert metadata.requests == [], metadata.requests
    assert (tmp_path / "guarded" / "o.mp4").stat().st_size > 0 and stats is not None


@pytest.mark.render
def test_a_warm_tab_is_guarded_on_every_render_with_one_guard(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    """A warm browser keeps its tab across renders (each with its own composition server): every load gets a
    guard for that server, and the last render's guard is dropped rather than piling up."""
    from helios_kit.render import render_range
    from helios_kit.render.netguard import PageGuard
    from helios_kit.render.warm import WarmBrowser

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    folder = tmp_path / "warm"
    folder.mkdir()
    (folder / "index.html").write_text(PAGE.replace("METADATA_URL", metadata.url))
    config = RenderConfig(input="index.html", width=96, height=64, fps=10, frame_count=2)
    with WarmBrowser() as warm:
        for run in range(3):
            render_range(
                config,
                input_location=str(folder / "index.html"),
                start_frame=0,
                frame_count=2,
                output_path=folder / f"o{run}.mp4",
                warm=warm,
            )
            listeners = warm._browser.cdp._listeners  # what the kept browser dispatches to
            guards = [fn for fn in listeners if isinstance(getattr(fn, "__self__", None), PageGuard)]
            assert len(guards) == 1, guards
    assert metadata.requests == [], metadata.requests
    assert all((folder / f"o{run}.mp4").stat().st_size > 0 for run in range(3))


@pytest.mark.render
def test_control_without_the_guard_the_page_reaches_it(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "off")
    _render(tmp_path, metadata, "open")
    assert metadata.requests, "the control page never tried: the guarded test would prove nothing"


@pytest.mark.render
def test_an_allowed_host_is_reachable(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    port = metadata.url.split(":")[2].split("/")[0]
    monkeypatch.setenv("HELIOS_NETGUARD_ALLOW", f"127.0.0.1:{port}")
    _render(tmp_path, metadata, "allowed")
    assert metadata.requests


@pytest.mark.render
def test_a_job_naming_the_metadata_service_as_its_composition_fails_cleanly(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    from helios_kit.errors import RenderError
    from helios_kit.render import render_range

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    config = RenderConfig(input=metadata.url, width=96, height=64, fps=10, frame_count=2)
    with pytest.raises(RenderError) as raised:
        render_range(config, input_location=metadata.url, start_frame=0, frame_count=2, output_path=tmp_path / "o.mp4")
    assert metadata.requests == [], metadata.requests
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "o.mp4").exists()


class _Page:
    session_id = "s"


def _guard(allowed: list[str] | None = None) -> PageGuard:
    return PageGuard(_Page(), "http://127.0.0.1:4321/index.html", GuardPolicy(enabled=True, allowed=allowed or []))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://127.0.0.1:8080/",
        "http://127.9.9.9/",
        "http://localhost:4321/",
        "http://[::1]:4321/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:22/",
        "ws://127.0.0.1:9222/devtools",
        "http://foo.localhost/",
    ],
)
def test_internal_hosts_are_blocked(url: str) -> None:
    assert not _guard().allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4321/assets/a.png",  # the page's own origin (the composition server)
        "data:image/png;base64,AAAA",
        "blob:http://127.0.0.1:4321/x",
        "https://93.184.216.34/font.woff2",
    ],
)
def test_own_origin_and_public_hosts_pass(url: str) -> None:
    assert _guard().allows(url)


@given(a=st.integers(0, 255), b=st.integers(0, 255), port=st.integers(1, 65535))
def test_every_link_local_address_is_blocked(a: int, b: int, port: int) -> None:
    assert not _guard().allows(f"http://169.254.{a}.{b}:{port}/")
    assert _guard([f"169.254.{a}.{b}:{port}"]).allows(f"http://169.254.{a}.{b}:{port}/")


# -- what the page's Fetch guard does not see: DNS rebinding, service workers, WebSockets, workers ---------
# Each attack runs in a real Chromium on a page served by its own composition server (trusted), launched
# with the guard on (HELIOS_NETGUARD=on at launch: all traffic through the pinning proxy, render/egress.py)
# and, as the control, off: the control shows the attack reaches the stand-in, so the guarded run can fail.

ATTACKS = {
    "service_worker": """
      const reg = await navigator.serviceWorker.register("sw.js");
      const worker = (await navigator.serviceWorker.ready).active;
      return await new Promise(done => {
        navigator.serviceWorker.onmessage = event => done(event.data);
        worker.postMessage("go");
      });""",
    "websocket": """
      return await new Promise(done => {
        const ws = new WebSocket("WS_URL");
        ws.onopen = () => done("open"); ws.onerror = () => done("error"); ws.onclose = () => done("closed");
      });""",
    "dedicated_worker": """
      const code = `fetch("META_URL").then(r => r.text()).then(t => postMessage(t), () => postMessage("blocked"))`;
      const worker = new Worker(URL.createObjectURL(new Blob([code], {type: "text/javascript"})));
      return await new Promise(done => { worker.onmessage = event => done(event.data); });""",
    "img": """
      return await new Promise(done => {
        const img = new Image(); img.onload = () => done("loaded"); img.onerror = () => done("error");
        img.src = "META_URL";
      });""",
    "iframe": """
      return await new Promise(done => {
        const frame = document.createElement("iframe"); frame.onload = () => done("loaded");
        frame.src = "META_URL"; document.body.appendChild(frame);
      });""",
    "webrtc": """
      const pc = new RTCPeerConnection({iceServers: [
        {urls: "turn:127.0.0.1:TCP_PORT?transport=tcp", username: "u", credential: "p"},
        {urls: "stun:127.0.0.1:UDP_PORT"}]});
      pc.createDataChannel("x");
      await pc.setLocalDescription(await pc.createOffer());
      const complete = () => pc.iceGatheringState === "complete";
      if (!complete()) await new Promise(done => { pc.onicegatheringstatechange = () => complete() && done(); });
      return "gathered";""",
    "webtransport": """
      try { const t = new WebTransport("https://127.0.0.1:UDP_PORT/x"); await t.ready; return "open"; }
      catch (e) { return "error"; }""",
    "fetch_by_name": """
      try { return await (await fetch("NAME_URL")).text(); } catch (e) { return "blocked"; }""",
}

SERVICE_WORKER = """
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", event => event.waitUntil(self.clients.claim()));
self.addEventListener("message", event => {
  event.waitUntil(fetch("META_URL").then(r => r.text(), () => "blocked")
    .then(text => event.source.postMessage(text)));
});
"""

ATTACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><script>
  window.attempt = (async () => { ATTACK })().catch(error => "threw: " + error);
</script></body></html>"""

REBIND_NAME = "rebind.test"


class CompositionServer:
    """A folder served on 127.0.0.1 (the render's own server in production)."""

    def __init__(self, folder: Path) -> None:
        from functools import partial
        from http.server import SimpleHTTPRequestHandler

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/index.html"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attempt(
    tmp_path: Path,
    metadata: MetadataServer,
    attack: str,
    flags: tuple[str, ...] = (),
    *,
    raw: RawListeners | None = None,
    until: threading.Event | None = None,
) -> tuple[Any, Any]:
    """Open the attack page in a fresh browser (guarded or not, as HELIOS_NETGUARD says) and return what
    the attack got, with the browser's egress proxy (None when unguarded). With `until`, wait for that
    event (the stand-in was reached) instead of the page's answer."""
    from helios_kit.render.browser import Browser
    from helios_kit.render.page import guard_network

    port = metadata.server.server_address[1]
    meta = metadata.url
    substitutions = {
        "META_URL": meta,
        "WS_URL": f"ws://127.0.0.1:{port}/socket",
        "NAME_URL": f"http://{REBIND_NAME}:{port}/computeMetadata/v1/token",
        "TCP_PORT": str(raw.tcp_port if raw else 0),
        "UDP_PORT": str(raw.udp_port if raw else 0),
    }
    script = ATTACKS[attack]
    for key, value in substitutions.items():
        script = script.replace(key, value)
    (tmp_path / "index.html").write_text(ATTACK_PAGE.replace("ATTACK", script))
    (tmp_path / "sw.js").write_text(SERVICE_WORKER.replace("META_URL", meta))
    server = CompositionServer(tmp_path)
    try:
        with Browser(extra_flags=flags) as browser:
            page = browser.new_page(96, 64)
            page.send("Page.enable")
            guard_network(page, server.url, own_server=True)
            page.send("Page.navigate", {"url": server.url})
            assert page.wait_event("Page.loadEventFired", 60) is not None
            if until is not None:
                return until.wait(120), browser.egress
            return page.evaluate("window.attempt", timeout=120), browser.egress
    finally:
        server.close()


@pytest.mark.render
@pytest.mark.parametrize("attack", ["service_worker", "websocket", "dedicated_worker", "img", "iframe"])
def test_attacks_the_fetch_guard_cannot_see_are_blocked(
    tmp_path: Path, metadata: MetadataServer, monkeypatch, attack: str
) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    got, proxy = _attempt(tmp_path, metadata, attack)
    assert metadata.requests == [], (attack, got, metadata.requests)
    assert "SECRET-TOKEN" not in str(got) and got != "open"
    if attack in ("service_worker", "websocket"):  # never paused by the page's Fetch guard: the proxy refused
        assert f"127.0.0.1:{metadata.server.server_address[1]}" in proxy.blocked, (got, proxy.blocked)


@pytest.mark.render
@pytest.mark.parametrize("attack", ["service_worker", "websocket", "dedicated_worker", "img", "iframe"])
def test_control_the_same_attacks_reach_the_service_unguarded(
    tmp_path: Path, metadata: MetadataServer, monkeypatch, attack: str
) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "off")
    got, proxy = _attempt(tmp_path, metadata, attack)
    assert metadata.requests, (attack, got)
    assert proxy is None


class RawListeners:
    """A TCP listener and a UDP socket on 127.0.0.1 that count what reaches them (WebRTC's TURN and STUN
    targets); `touched` is set by the first connection or datagram."""

    def __init__(self) -> None:
        import socket

        self.accepted: list[bytes] = []
        self.datagrams: list[bytes] = []
        self.touched = threading.Event()
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp_port, self.udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.tcp.accept()
                self.accepted.append(conn.recv(64))
                self.touched.set()

    def _receive(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.datagrams.append(self.udp.recvfrom(2048)[0])
                self.touched.set()

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.mark.render
@pytest.mark.parametrize("attack", ["webrtc", "webtransport"])
def test_own_sockets_cannot_reach_loopback_over_udp_or_tcp(
    tmp_path: Path, metadata: MetadataServer, monkeypatch, attack: str
) -> None:
    """WebRTC (STUN over UDP, TURN over TCP) and WebTransport (HTTP/3 over UDP) open sockets of their own:
    the guarded browser sends no UDP of its own (`disable_non_proxied_udp`) and a TURN connection goes to
    the proxy, which refuses loopback."""
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    raw = RawListeners()
    try:
        got, proxy = _attempt(tmp_path, metadata, attack, raw=raw)
    finally:
        raw.close()
    assert got == ("gathered" if attack == "webrtc" else "error")
    assert raw.accepted == [] and raw.datagrams == [], (raw.accepted, raw.datagrams)
    if attack == "webrtc":
        assert f"127.0.0.1:{raw.tcp_port}" in proxy.blocked


@pytest.mark.render
@pytest.mark.parametrize("attack", ["webrtc", "webtransport"])
def test_control_own_sockets_reach_loopback_unguarded(
    tmp_path: Path, metadata: MetadataServer, monkeypatch, attack: str
) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "off")
    raw = RawListeners()
    try:
        reached, _ = _attempt(tmp_path, metadata, attack, raw=raw, until=raw.touched)
    finally:
        raw.close()
    assert reached and (raw.accepted or raw.datagrams)


@pytest.mark.render
def test_control_a_name_chromium_resolves_to_loopback_reaches_the_service(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    """Without the guard, a DNS name that resolves to 127.0.0.1 (simulated with Chromium's resolver rules)
    reaches the loopback service: a guard deciding on the name alone would let this through."""
    monkeypatch.setenv("HELIOS_NETGUARD", "off")
    got, _ = _attempt(tmp_path, metadata, "fetch_by_name", (f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1",))
    assert got == "SECRET-TOKEN" and metadata.requests


@pytest.mark.render
def test_a_name_resolving_to_loopback_is_blocked(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    from helios_kit.render import hosts

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    answers = {REBIND_NAME: ["127.0.0.1"]}
    monkeypatch.setattr(hosts, "system_resolve", lambda host, port: answers.get(host, []))
    flags = (f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1",)
    got, _proxy = _attempt(tmp_path, metadata, "fetch_by_name", flags)
    assert got == "blocked" and metadata.requests == []


@pytest.mark.render
def test_dns_rebinding_connects_only_to_the_checked_address(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    """The name's DNS answers a public address when checked; Chromium's own resolver would say 127.0.0.1
    (the rebinding). The guarded browser never resolves the name itself: the proxy connects to the address
    it checked (recorded here instead of connecting: no traffic leaves 127.0.0.1) and the loopback
    service never sees a request."""
    from helios_kit.render import egress, hosts

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    public = "198.51.100.7"
    monkeypatch.setattr(hosts, "system_resolve", lambda host, port: [public] if host == REBIND_NAME else [])
    attempted: list[tuple[str, int]] = []
    real_connect = egress.EgressProxy.connect

    async def record(self, address: str, port: int):
        if address == public:  # recorded, never dialled
            attempted.append((address, port))
            raise ConnectionRefusedError(address)
        return await real_connect(self, address, port)  # the page's own server

    monkeypatch.setattr(egress.EgressProxy, "connect", record)
    flags = (f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1",)
    got, proxy = _attempt(tmp_path, metadata, "fetch_by_name", flags)
    port = metadata.server.server_address[1]
    assert metadata.requests == [] and "SECRET" not in str(got)
    assert attempted == [(public, port)], attempted
    assert ("127.0.0.1", port) not in proxy.connected


def test_proxy_decisions() -> None:
    """The proxy's own rules, without a browser: trusted origins and allowed hosts pass, internal names
    and addresses (literal or resolved) do not, and what passes is the address that was checked."""
    from helios_kit.render.egress import EgressProxy

    answers = {"public.test": ["198.51.100.7"], "inside.test": ["198.51.100.7", "169.254.169.254"]}
    proxy = EgressProxy(allowed=lambda: {"allowed.test"}, resolver=lambda host, port: answers.get(host, []))
    try:
        proxy.trust("127.0.0.1:4000", tab="t1")
        proxy.trust("127.0.0.1:4321", tab="t1")  # the tab's next render: its earlier server is no longer trusted
        assert proxy.destination("127.0.0.1", 4321) == "127.0.0.1"  # a page's own server
        assert proxy.destination("127.0.0.1", 4000) is None
        assert proxy.destination("allowed.test", 80) is None  # allowed, but it does not resolve
        assert proxy.destination("public.test", 443) == "198.51.100.7"
        assert proxy.destination("inside.test", 80) is None  # one internal answer is enough
        assert proxy.destination("169.254.169.254", 80) is None
        assert proxy.destination("metadata.google.internal", 80) is None
        assert proxy.destination("127.0.0.1", 8080) is None
        assert proxy.destination("[::1]", 80) is None
        assert proxy.destination("unknown.test", 80) is None
    finally:
        proxy.close()


_PROXY = None


def _shared_proxy():
    """One proxy for the property tests (its thread and loop are not per example)."""
    global _PROXY
    from helios_kit.render.egress import EgressProxy

    if _PROXY is None:
        _PROXY = EgressProxy(allowed=set, resolver=lambda host, port: [])
    return _PROXY


_internal_ips = st.one_of(
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="169.254.0.0/16"),
    st.ip_addresses(network="::1/128"),
    st.ip_addresses(network="fe80::/10"),
    st.ip_addresses(network="0.0.0.0/32"),
    st.ip_addresses(network="127.0.0.0/8").map(lambda ip: ipaddress.ip_address(f"::ffff:{ip}")),
)


def _host(ip) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


@given(ip=_internal_ips, port=st.integers(1, 65535), connect=st.booleans())
def test_proxy_refuses_every_internal_address_however_asked(ip, port: int, connect: bool) -> None:
    from helios_kit.render.egress import _Request

    head = (
        f"CONNECT {_host(ip)}:{port} HTTP/1.1\r\nHost: {_host(ip)}:{port}\r\n\r\n"
        if connect
        else f"GET http://{_host(ip)}:{port}/computeMetadata/v1/ HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    request = _Request.parse(head.encode())
    assert ipaddress.ip_address(request.host) == ip and request.port == port
    assert _shared_proxy().destination(request.host, request.port) is None


@given(ip=st.ip_addresses(v=4), port=st.integers(1, 65535), path=st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True))
def test_proxy_forwards_public_addresses_as_origin_form_one_request_per_connection(ip, port: int, path: str) -> None:
    from helios_kit.render.egress import _Request
    from helios_kit.render.hosts import internal_address

    head = f"GET http://{ip}:{port}{path}?q=1 HTTP/1.1\r\nHost: {ip}:{port}\r\nProxy-Connection: keep-alive\r\n\r\n"
    request = _Request.parse(head.encode())
    expected = None if internal_address(str(ip)) else str(ip)
    assert _shared_proxy().destination(request.host, request.port) == expected
    forwarded = request.forwarded_head().decode()
    assert forwarded.startswith(f"GET {path}?q=1 HTTP/1.1\r\n") and forwarded.endswith("\r\n\r\n")
    assert "Proxy-Connection" not in forwarded and "Connection: close\r\n" in forwarded


def test_proxy_tries_each_checked_address_in_turn(metadata: MetadataServer) -> None:
    """A name whose first answer does not accept (an IPv6 address on a host without it, here ::1 where
    nothing listens) is reached on its next checked address instead of failing the request."""
    import socket

    from helios_kit.render.egress import EgressProxy

    port = metadata.server.server_address[1]
    proxy = EgressProxy(allowed=lambda: {"dual.test"}, resolver=lambda host, _: ["::1", "127.0.0.1"])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=60) as conn:
            conn.sendall(f"GET http://dual.test:{port}/computeMetadata/v1/token HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
    finally:
        proxy.close()
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert answer.endswith(b"SECRET-TOKEN") and metadata.requests == ["/computeMetadata/v1/token"]
    assert proxy.connected[-1] == ("127.0.0.1", port)
