"""Which job URLs and stores an HTTP worker (`helios worker serve`) may touch: the allowlist.

A request names a job URL and a store; a worker that fetched and wrote whatever a caller named would let a
caller read the worker's files, reach services only the worker can reach (its loopback, the cloud metadata
service) and commit to paths of the caller's choosing. :class:`AllowPolicy` decides:

* with prefixes (`--allow PREFIX`, repeatable, or `HELIOS_ALLOW`, space- or comma-separated), a URL is
  allowed only when it starts with one of them (`s3://renders/jobs/`, `https://cdn.example.com/jobs/`,
  `file:///srv/jobs/`); anything else is refused;
* without prefixes, remote URLs (https, s3, gs, ...) are allowed, but never local paths (`file://`) nor
  hosts that are the worker itself or its link-local neighbours (loopback, 169.254.0.0/16, fe80::/10,
  `localhost`, `metadata.google.internal`): those need an explicit prefix;
* `open` (an embedding or a test that builds the app itself) allows everything.

The job URL and store are checked before anything is fetched (403); a composition the spec names by
absolute URL (`config.input`) is checked by the runtime once the spec is read (a failed, not retryable
result: 422). A relative composition resolves under the job's URL, which was checked.

A local path is compared as a `file://` URL of its absolute form, so `../` cannot climb out of a prefix.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from helios_kit.composition.locations import is_http, is_local, local_path
from helios_kit.errors import HeliosError

ALLOW_ENV_VAR = "HELIOS_ALLOW"
#: Host names that are the worker's own or its platform's, refused without an explicit prefix.
BLOCKED_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal", "metadata"})


class NotAllowedError(HeliosError):
    """A location the worker may not touch (the caller's to fix: not retryable)."""

    retryable = False


class AllowPolicy(BaseModel):
    """Prefixes a job URL or store must start with; empty means "remote URLs only"."""

    prefixes: list[str] = Field(default_factory=list)
    open: bool = Field(False, description="Allow everything (in-process embeddings and tests only).")

    @classmethod
    def from_env(cls) -> AllowPolicy:
        raw = os.environ.get(ALLOW_ENV_VAR, "")
        return cls(prefixes=[p for p in raw.replace(",", " ").split() if p])

    def describe(self) -> str:
        if self.open:
            return "everything (open)"
        if self.prefixes:
            return ", ".join(self.prefixes)
        return "remote URLs only (no file://, loopback or link-local hosts)"

    def refusal(self, what: str, url: str) -> str | None:
        """None when `url` may be used, else one line saying why not (the 403's message)."""
        if self.open:
            return None
        normal = normalize(url)
        if self.prefixes:
            if any(normal.startswith(normalize(prefix)) for prefix in self.prefixes):
                return None
            return f"{what} {url} is not allowed on this worker (allowed: {self.describe()})"
        if is_local(url):
            return f"{what} {url} is a local path: not allowed unless the worker is started with --allow file://..."
        host = urlsplit(url).hostname or ""
        if is_http(url) and host_is_internal(host):
            return f"{what} {url} names a loopback or link-local host: not allowed unless given with --allow"
        return None

    def enforce(self, what: str, url: str) -> None:
        """NotAllowedError (one line) unless `url` may be used."""
        refusal = self.refusal(what, url)
        if refusal is not None:
            raise NotAllowedError(refusal)


def normalize(url: str) -> str:
    """A comparable form: local paths as absolute `file://` URLs (no `..`), URL schemes and hosts lower case."""
    if is_local(url):  # `..` resolved; a trailing slash kept (a folder prefix must not match `jobs-secret`)
        trailing = "/" if url.endswith("/") else ""
        return "file://" + os.path.abspath(local_path(url)).rstrip("/") + trailing
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{authority.lower()}{slash}{path}"


def host_is_internal(host: str) -> bool:
    """Whether `host` is the machine itself or a link-local neighbour (by name, literal or resolution)."""
    name = host.strip("[]").lower().rstrip(".")
    if not name or name in BLOCKED_NAMES or name.endswith(".localhost"):
        return True
    addresses: set[str] = set()
    try:
        addresses.add(str(ipaddress.ip_address(name)))
    except ValueError:
        try:
            addresses |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            return False  # unresolvable here: the fetch will fail on its own
    return any(_internal_ip(address) for address in addresses)


def _internal_ip(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified
