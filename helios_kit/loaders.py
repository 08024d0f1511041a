"""Spec loaders: read a JobSpec from a file, an http(s) URL, or any fsspec URL (s3://, gs://, memory://).

Loaders are registered per URL scheme through the `register_spec_loaders` hook, so a plugin can add one.
A loader returns the raw bytes; :func:`read_source` runs it under a total deadline (`timeout`, default 30 s,
`HELIOS_SPEC_TIMEOUT`) besides the size cap, and :func:`load_spec` parses and validates them. Every failure is
a :class:`LoaderError` or :class:`SpecError` with one line naming the source: file not found, HTTP status,
connection refused, timeout, body over the size cap, invalid JSON with line and column, a schema error
naming the field path, an unsupported scheme listing the supported ones. Permanent faults (not found,
HTTP 4xx other than 408/429, too large, unsupported scheme, access denied, a missing extra package) are
raised with `retryable=False`; the rest (timeouts, refused connections, 5xx) may succeed on another try.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from helios_kit.composition.locations import job_dir_for, scheme_of, url_to_fs
from helios_kit.errors import LoaderError, UnknownNameError, describe
from helios_kit.spec import JobSpec, loads

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
TIMEOUT_ENV_VAR = "HELIOS_SPEC_TIMEOUT"
#: HTTP client errors that another attempt may get past.
_RETRYABLE_CLIENT_STATUSES = {408, 429}


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV_VAR)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise LoaderError(f"{TIMEOUT_ENV_VAR}: must be a number of seconds > 0, got {raw!r}", retryable=False)
    return value


class LoaderOptions(BaseModel):
    """How far a loader may go: a total deadline (s) for reading a spec, a size cap (bytes), and fsspec
    storage options."""

    timeout: float = Field(default_factory=_timeout_from_env, gt=0)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0)
    storage_options: dict[str, Any] = {}


def load_spec(source: str | os.PathLike[str], options: LoaderOptions | None = None) -> tuple[JobSpec, Path]:
    """Load and validate a JobSpec from `source`; returns `(spec, job_dir)`."""
    text = os.fspath(source)
    return loads(read_source(text, options), source=text), job_dir_for(text)


def read_source(source: str | os.PathLike[str], options: LoaderOptions | None = None) -> bytes | str:
    """The raw content of a spec source, read by the loader registered for its scheme; a remote source must
    be read completely within `options.timeout` seconds in total (LoaderError naming the source otherwise)."""
    from helios_kit.plugins import get_plugins

    text = os.fspath(source)
    options = options or LoaderOptions()
    scheme = scheme_of(text)
    plugins = get_plugins()
    try:
        loader = plugins.spec_loader(scheme)
    except UnknownNameError:
        supported = ", ".join(plugins.names("spec loader"))
        raise LoaderError(f"unsupported scheme {scheme!r} in {text}; supported: {supported}", retryable=False) from None
    if scheme == "file":
        return loader(text, options)
    return _within_deadline(lambda: loader(text, options), options.timeout, text)


def _within_deadline(read: Callable[[], Any], timeout: float, source: str) -> Any:
    """Run `read` on a helper thread and give up after `timeout` seconds, whatever it is waiting on (a
    server dripping its headers or body byte by byte, a stalled object store). A loader that overruns is
    left to stop at its own per-read timeout; its result is dropped."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["data"] = read()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"helios-spec-read {source}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _timed_out(source, timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["data"]


def _timed_out(source: str, timeout: float) -> LoaderError:
    return LoaderError(f"timed out after {timeout:g} s fetching {source}")


def _too_big(source: str, limit: int) -> LoaderError:
    return LoaderError(
        f"{source}: spec is larger than the {limit // (1024 * 1024)} MiB cap ({limit} bytes)", retryable=False
    )


def load_file(source: str, options: LoaderOptions) -> bytes:
    """Read a local job file."""
    path = Path(source.removeprefix("file://"))
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise LoaderError(f"job file is a directory: {source}", retryable=False)
        if size > options.max_bytes:
            raise _too_big(source, options.max_bytes)
        return path.read_bytes()
    except FileNotFoundError:
        raise LoaderError(f"job file not found: {source}", retryable=False) from None
    except NotADirectoryError:
        raise LoaderError(f"job file not found (a parent is not a folder): {source}", retryable=False) from None
    except PermissionError:
        raise LoaderError(f"job file not readable (permission denied): {source}", retryable=False) from None


def load_http(source: str, options: LoaderOptions) -> bytes:
    """GET a job file over http(s): redirects followed, status checked, the body streamed under the size cap
    and the total deadline (a server sending one byte per second fails at the deadline, not never)."""
    import httpx

    deadline = time.monotonic() + options.timeout
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=options.timeout, max_redirects=10) as client,
            client.stream("GET", source, headers={"Accept": "application/json"}) as response,
        ):
            _check_status(response.status_code, response.reason_phrase, source)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > options.max_bytes:
                raise _too_big(source, options.max_bytes)
            body = bytearray()
            for block in response.iter_bytes():
                body += block
                if len(body) > options.max_bytes:
                    raise _too_big(source, options.max_bytes)
                if time.monotonic() > deadline:
                    raise _timed_out(source, options.timeout)
            return bytes(body)
    except httpx.TimeoutException:
        raise _timed_out(source, options.timeout) from None
    except httpx.TooManyRedirects:
        raise LoaderError(f"too many redirects fetching {source}", retryable=False) from None
    except httpx.ConnectError as error:
        reason = "connection refused" if "refused" in str(error).lower() else f"cannot connect ({error})"
        raise LoaderError(f"{reason}: {source}") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise LoaderError(f"invalid URL {source}: {error}", retryable=False) from None
    except httpx.HTTPError as error:
        raise LoaderError(f"cannot fetch {source}: {type(error).__name__}: {error}") from None


def _check_status(status: int, reason: str | None, source: str) -> None:
    """LoaderError for an HTTP error status; a client error other than 408/429 will not change on retry."""
    if status < 400:
        return
    permanent = status < 500 and status not in _RETRYABLE_CLIENT_STATUSES
    raise LoaderError(f"HTTP {status} {reason or ''}".rstrip() + f" from {source}", retryable=not permanent)


def load_fsspec(source: str, options: LoaderOptions) -> bytes:
    """Read a job file through fsspec (s3://, gs://, memory://, ...)."""
    scheme = scheme_of(source)
    storage_options = dict(options.storage_options)
    if scheme == "s3":
        storage_options.setdefault(
            "config_kwargs", {"connect_timeout": options.timeout, "read_timeout": options.timeout}
        )
    try:
        fs, path = url_to_fs(source, **storage_options)
        size = fs.size(path)
        if size is not None and size > options.max_bytes:
            raise _too_big(source, options.max_bytes)
        data = fs.cat_file(path)  # one request; thread-safe even on fsspec's shared in-memory filesystem
    except LoaderError:
        raise
    except ImportError as error:
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        hint = f"pip install 'helios-kit[{extra}]'" if extra == "s3" else f"install the fsspec driver ({error})"
        raise LoaderError(f"{scheme}:// needs an extra package: {hint}", retryable=False) from None
    except FileNotFoundError:
        raise LoaderError(f"job file not found: {source}", retryable=False) from None
    except IsADirectoryError:
        raise LoaderError(f"job file is a directory: {source}", retryable=False) from None
    except PermissionError as error:
        raise LoaderError(f"access denied reading {source}: {describe(error)}", retryable=False) from None
    except Exception as error:
        raise LoaderError(f"cannot read {source}: {describe(error)}") from None
    if len(data) > options.max_bytes:
        raise _too_big(source, options.max_bytes)
    return data
