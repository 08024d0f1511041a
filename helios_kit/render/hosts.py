"""Which hosts a composition must not reach: loopback, link-local (the cloud metadata service), unspecified,
and the metadata and localhost names. The one owner of that decision: the page-level guard
(render/netguard.py) asks it for every paused request, and the pinning proxy (render/egress.py) for every
connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

BLOCKED_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal", "metadata"})

#: Resolves a host name to its addresses (tests replace it to simulate a DNS answer).
Resolver = Callable[[str, int], list[str]]


def internal_address(address: str) -> bool:
    """Whether an IP address is one a composition must not reach: loopback, link-local (the metadata
    service), unspecified; IPv4-mapped IPv6 addresses count as their IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def internal_name(name: str) -> bool:
    """Whether a host name is internal by itself (the metadata names, localhost and its subdomains)."""
    name = name.strip("[]").lower().rstrip(".")
    return not name or name in BLOCKED_NAMES or name.endswith(".localhost")


def host_addresses(host: str, port: int, resolver: Resolver | None = None) -> list[str]:
    """`host` itself when it is an IP address, else what `resolver` (the system's by default) gives."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return (resolver or system_resolve)(host, port)


def internal_host(host: str) -> bool:
    """Whether `host` is internal by name or by any address the system resolves it to (an unresolvable name
    is not: its request fails on its own)."""
    return internal_name(host) or any(internal_address(address) for address in host_addresses(host, 0))


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host` (empty when it cannot resolve it)."""
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError:
        return []
