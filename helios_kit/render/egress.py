"""The guarded browser's only way out: a loopback forward proxy that resolves, checks and pins every address.

The page-level guard (render/netguard.py) pauses the page's own requests in CDP's Fetch domain. Three kinds
of traffic never pause there: requests of service workers, WebSockets, and (depending on the Chromium
build) workers'. And a decision on the host *name* is not a decision on the address Chromium connects to: a
DNS name the composition controls can resolve to a public address when checked and to 169.254.169.254 or
127.0.0.1 when Chromium connects (DNS rebinding).

So a browser launched with the guard on sends all its traffic, loopback included, through an
:class:`EgressProxy` on 127.0.0.1 (``--proxy-server``, ``--proxy-bypass-list=<-loopback>``). For each
connection (``CONNECT host:port`` for https, wss and ws; an absolute-URI request for plain http) the proxy

1. lets through the origins the browser's pages trust (their own composition server, added per page with
   :meth:`EgressProxy.trust`) and the hosts of ``HELIOS_NETGUARD_ALLOW``;
2. otherwise resolves the name itself (literal addresses as they are), refuses (403) when any address it
   resolves to is loopback, link-local (the metadata service) or unspecified (:func:`internal_address`),
   or the name is one of the metadata names;
3. connects to exactly the address it checked: Chromium never resolves a name of a guarded page, so a
   second answer of the name's DNS server is never used.

WebRTC and WebTransport open sockets of their own: the guarded browser gets no UDP outside a proxy
(``--force-webrtc-ip-handling-policy=disable_non_proxied_udp``), so STUN never leaves and TURN over TCP
comes to this proxy like any other connection.

Plain-http requests are forwarded one per connection (``Connection: close``); CONNECT tunnels are spliced
byte for byte. The proxy runs an asyncio loop on one daemon thread per browser and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from helios_kit.render.hosts import Resolver, host_addresses, internal_address, internal_name

log = logging.getLogger("helios.render.egress")

_HEAD_LIMIT = 64 * 1024
#: Seconds to wait for one upstream address to accept before trying the next.
CONNECT_TIMEOUT_S = 30.0
_HOP_HEADERS = frozenset({"proxy-connection", "connection", "keep-alive", "proxy-authorization"})
_FORBIDDEN_BODY = b"blocked by the helios network guard\r\n"
_FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    + f"Content-Length: {len(_FORBIDDEN_BODY)}\r\n\r\n".encode()
)
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class EgressProxy:
    """A forward proxy on 127.0.0.1 that connects only to checked addresses (see the module docstring)."""

    def __init__(self, allowed: Callable[[], set[str]], resolver: Resolver | None = None) -> None:
        #: `host` and `host:port` entries always allowed (read per connection: HELIOS_NETGUARD_ALLOW).
        self.allowed = allowed
        self.resolver = resolver
        #: Each tab's own composition server (`host:port`), by tab: a reused tab's next render replaces it.
        self._trusted: dict[str, str] = {}
        self.blocked: list[str] = []
        self.connected: list[tuple[str, int]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="helios-egress", daemon=True)
        self._thread.start()
        self._ready.wait()
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    # -- the browser's side ------------------------------------------------------------------------------
    def chromium_flags(self) -> tuple[str, ...]:
        """Launch flags sending every request of the browser, loopback included, through this proxy."""
        return (
            f"--proxy-server=http://127.0.0.1:{self.port}",
            "--proxy-bypass-list=<-loopback>",
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",  # WebRTC: no UDP of its own
        )

    def trust(self, origin: str, tab: str) -> None:
        """Let the browser reach `origin` (`host:port`), the own composition server of tab `tab`, instead
        of that tab's previous one (a warm tab's earlier server is gone; its port may be anyone's now)."""
        self._trusted[tab] = origin.lower()

    @property
    def trusted(self) -> set[str]:
        return set(self._trusted.values())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- the decision ------------------------------------------------------------------------------------
    def destination(self, host: str, port: int) -> str | None:
        """The first address to connect to for `host:port`, or None when the guard refuses it."""
        addresses = self.destinations(host, port)
        return addresses[0] if addresses else None

    def destinations(self, host: str, port: int) -> list[str]:
        """The checked addresses of `host:port`, in the resolver's order (empty: refused)."""
        host = host.strip("[]").lower().rstrip(".")
        allowed = self.allowed()
        if f"{host}:{port}" in self.trusted or host in allowed or f"{host}:{port}" in allowed:
            return self._addresses(host, port)
        if internal_name(host):
            return []
        addresses = self._addresses(host, port)
        if any(internal_address(address) for address in addresses):
            return []
        return addresses

    def _addresses(self, host: str, port: int) -> list[str]:
        return host_addresses(host, port, self.resolver)

    # -- the proxy ---------------------------------------------------------------------------------------
    async def _dial(self, addresses: list[str], port: int) -> _Streams | None:
        """The first of the checked `addresses` that accepts a connection (an IPv6 answer first on a host
        without IPv6 must not fail the request), each within CONNECT_TIMEOUT_S; None when none does."""
        for address in dict.fromkeys(addresses):
            try:
                return await asyncio.wait_for(self.connect(address, port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                continue
        return None

    async def connect(self, address: str, port: int) -> _Streams:
        """Open the upstream connection to the checked `address` (never to a name)."""
        self.connected.append((address, port))
        return await asyncio.open_connection(address, port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request = _Request.parse(head)
            if _is_literal(request.host):  # decided at once; only a name's lookup goes to a thread
                addresses = self.destinations(request.host, request.port)
            else:
                addresses = await self._loop.run_in_executor(None, self.destinations, request.host, request.port)
            if not addresses:
                self.blocked.append(f"{request.host}:{request.port}")
                log.warning("blocked a connection of a guarded page to %s:%s", request.host, request.port)
                writer.write(_FORBIDDEN + _FORBIDDEN_BODY)
                return
            upstream = await self._dial(addresses, request.port)
            if upstream is None:
                writer.write(_BAD_GATEWAY)
                return
            up_reader, up_writer = upstream
            await self._relay(request, (reader, writer), (up_reader, up_writer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _relay(self, request: _Request, client: _Streams, upstream: _Streams) -> None:
        """Splice a tunnel until both sides are done; a plain request until its response is."""
        if request.method == "CONNECT":
            client[1].write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            upstream[1].write(request.forwarded_head())
        down = asyncio.ensure_future(_pipe(upstream[0], client[1]))
        up = asyncio.ensure_future(_pipe(client[0], upstream[1]))
        try:
            if request.method == "CONNECT" or request.upgrade:
                await asyncio.gather(down, up)
            else:
                await down
        finally:
            up.cancel()
            upstream[1].close()


_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Request:
    """The head of one proxied request: CONNECT host:port, or METHOD http://host:port/path."""

    def __init__(self, method: str, host: str, port: int, path: str, version: str, headers: list[str]) -> None:
        self.method, self.host, self.port, self.path, self.version = method, host, port, path, version
        self.headers = headers

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        line, *headers = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, version = line.split(" ", 2)
        if method == "CONNECT":
            parts = urlsplit(f"//{target}")
            return cls(method, parts.hostname or "", parts.port or 443, "", version, headers)
        parts = urlsplit(target)
        if parts.scheme not in ("http", "ws") or not parts.hostname:
            raise ValueError(f"not a proxy request: {line}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(method, parts.hostname, parts.port or 80, path, version, headers)

    @property
    def upgrade(self) -> bool:
        return any(h.lower().startswith("upgrade:") for h in self.headers)

    def forwarded_head(self) -> bytes:
        """The request as the origin server expects it: origin-form target, one request per connection
        (an Upgrade request keeps its Connection header)."""
        upgrade = self.upgrade
        kept = [h for h in self.headers if upgrade or h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
        if not upgrade:
            kept.append("Connection: close")
        return "\r\n".join([f"{self.method} {self.path} {self.version}", *kept, "", ""]).encode("latin-1")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
