"""The worker's spec fetch, stoppable: a caller that goes away (or a job cancelled) stops it at once.

:func:`fetch_spec` reads a job's spec like :func:`helios_kit.loaders.read_source` (same deadline, size cap
and error lines) but watches a cancel event: an http(s) spec is streamed here and the connection is closed
as soon as the event is set (checked between blocks and while waiting for one); any other source runs on a
helper thread that is abandoned on cancel. Either way :class:`FetchCancelled` is raised, so the worker
holds no render slot for a caller that has gone, even while a server drips the spec byte by byte.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from helios_kit.composition.locations import is_http
from helios_kit.errors import LoaderError
from helios_kit.loaders import LoaderOptions, read_source

_POLL_S = 0.05


class FetchCancelled(Exception):
    """The spec fetch stopped because the cancel event was set."""


def fetch_spec(job_url: str, options: LoaderOptions, cancel: threading.Event | None) -> bytes | str:
    """The raw spec at `job_url`; FetchCancelled as soon as `cancel` is set."""
    if cancel is None:
        return read_source(job_url, options)
    if cancel.is_set():
        raise FetchCancelled(job_url)
    closer: dict[str, Any] = {}
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            if is_http(job_url):
                outcome["data"] = _read_http(job_url, options, cancel, closer)
            else:
                outcome["data"] = read_source(job_url, options)
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name=f"helios-spec-fetch {job_url}", daemon=True).start()
    while not done.wait(_POLL_S):
        if cancel.is_set():
            _close_quietly(closer.get("client"))
            raise FetchCancelled(job_url)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["data"]


def _read_http(url: str, options: LoaderOptions, cancel: threading.Event, closer: dict[str, Any]) -> bytes:
    """Stream `url` (status, size cap, total deadline as the http loader) stopping between blocks on cancel."""
    import httpx

    deadline = time.monotonic() + options.timeout
    with httpx.Client(follow_redirects=True, timeout=options.timeout, max_redirects=10) as client:
        closer["client"] = client
        try:
            with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code >= 400:
                    permanent = response.status_code < 500 and response.status_code not in (408, 429)
                    raise LoaderError(f"HTTP {response.status_code} from {url}", retryable=not permanent)
                body = bytearray()
                for block in response.iter_bytes():
                    if cancel.is_set():
                        raise FetchCancelled(url)
                    body += block
                    if len(body) > options.max_bytes:
                        raise LoaderError(f"{url}: spec is larger than {options.max_bytes} bytes", retryable=False)
                    if time.monotonic() > deadline:
                        raise LoaderError(f"timed out after {options.timeout:g} s fetching {url}")
                return bytes(body)
        except (FetchCancelled, LoaderError):
            raise
        except httpx.HTTPError as error:
            if cancel.is_set():
                raise FetchCancelled(url) from None
            raise _transport_error(url, options, error) from None


def _transport_error(url: str, options: LoaderOptions, error: Exception) -> LoaderError:
    """The loader's line for a transport failure (all retryable but an invalid URL)."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return LoaderError(f"timed out after {options.timeout:g} s fetching {url}")
    if isinstance(error, httpx.ConnectError):
        reason = "connection refused" if "refused" in str(error).lower() else f"cannot connect ({error})"
        return LoaderError(f"{reason}: {url}")
    if isinstance(error, (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects)):
        return LoaderError(f"cannot fetch {url}: {error}", retryable=False)
    return LoaderError(f"cannot fetch {url}: {type(error).__name__}: {error}")


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):  # closing from another thread may race the reader: it stops anyway
        client.close()
