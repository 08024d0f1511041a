"""Spec loaders: read a JobSpec from a file, an http(s) URL, or any fsspec URL (s3://, gs://, memory://).

Loaders are registered per URL scheme through the `register_spec_loaders` hook, so a plugin can add one.
A loader returns the raw bytes; :func:`load_spec` parses and validates them. Every failure is a
:class:`LoaderError` or :class:`SpecError` with one line naming the source: file not found, HTTP status,
connection refused, timeout, body over the size cap, invalid JSON with line and column, a schema error
naming the field path, an unsupported scheme listing the supported ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from helios_kit.composition.locations import job_dir_for, scheme_of
from helios_kit.errors import LoaderError, UnknownNameError, describe
from helios_kit.spec import JobSpec, loads

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class LoaderOptions(BaseModel):
    """How far a loader may go: timeout (s), size cap (bytes), and fsspec storage options."""

    timeout: float = Field(default_factory=lambda: float(os.environ.get("HELIOS_SPEC_TIMEOUT", DEFAULT_TIMEOUT_S)))
    max_bytes: int = DEFAULT_MAX_BYTES
    storage_options: dict[str, Any] = {}


def load_spec(source: str | os.PathLike[str], options: LoaderOptions | None = None) -> tuple[JobSpec, Path]:
    """Load and validate a JobSpec from `source`; returns `(spec, job_dir)`."""
    from helios_kit.plugins import get_plugins

    text = os.fspath(source)
    options = options or LoaderOptions()
    scheme = scheme_of(text)
    plugins = get_plugins()
    try:
        loader = plugins.spec_loader(scheme)
    except UnknownNameError:
        supported = ", ".join(plugins.names("spec loader"))
        raise LoaderError(f"unsupported scheme {scheme!r} in {text}; supported: {supported}") from None
    data = loader(text, options)
    return loads(data, source=text), job_dir_for(text)


def _too_big(source: str, limit: int) -> LoaderError:
    return LoaderError(f"{source}: spec is larger than the {limit // (1024 * 1024)} MiB cap ({limit} bytes)")


def load_file(source: str, options: LoaderOptions) -> bytes:
    """Read a local job file."""
    path = Path(source.removeprefix("file://"))
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise LoaderError(f"job file is a directory: {source}")
        if size > options.max_bytes:
            raise _too_big(source, options.max_bytes)
        return path.read_bytes()
    except FileNotFoundError:
        raise LoaderError(f"job file not found: {source}") from None
    except PermissionError:
        raise LoaderError(f"job file not readable (permission denied): {source}") from None


def load_http(source: str, options: LoaderOptions) -> bytes:
    """GET a job file over http(s): redirects followed, timeout, size cap, status checked."""
    import httpx

    try:
        with (
            httpx.Client(follow_redirects=True, timeout=options.timeout, max_redirects=10) as client,
            client.stream("GET", source, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code >= 400:
                reason = response.reason_phrase or ""
                raise LoaderError(f"HTTP {response.status_code} {reason}".rstrip() + f" from {source}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > options.max_bytes:
                raise _too_big(source, options.max_bytes)
            body = bytearray()
            for block in response.iter_bytes():
                body += block
                if len(body) > options.max_bytes:
                    raise _too_big(source, options.max_bytes)
            return bytes(body)
    except httpx.TimeoutException:
        raise LoaderError(f"timed out after {options.timeout:g} s fetching {source}") from None
    except httpx.TooManyRedirects:
        raise LoaderError(f"too many redirects fetching {source}") from None
    except httpx.ConnectError as error:
        reason = "connection refused" if "refused" in str(error).lower() else f"cannot connect ({error})"
        raise LoaderError(f"{reason}: {source}") from None
    except httpx.InvalidURL as error:
        raise LoaderError(f"invalid URL {source}: {error}") from None
    except httpx.HTTPError as error:
        raise LoaderError(f"cannot fetch {source}: {type(error).__name__}: {error}") from None


def load_fsspec(source: str, options: LoaderOptions) -> bytes:
    """Read a job file through fsspec (s3://, gs://, memory://, ...)."""
    import fsspec

    scheme = scheme_of(source)
    storage_options = dict(options.storage_options)
    if scheme == "s3":
        storage_options.setdefault(
            "config_kwargs", {"connect_timeout": options.timeout, "read_timeout": options.timeout}
        )
    try:
        fs, path = fsspec.core.url_to_fs(source, **storage_options)
        size = fs.size(path)
        if size is not None and size > options.max_bytes:
            raise _too_big(source, options.max_bytes)
        data = fs.cat_file(path)  # one request; thread-safe even on fsspec's shared in-memory filesystem
    except LoaderError:
        raise
    except ImportError as error:
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        hint = f"pip install 'helios-kit[{extra}]'" if extra == "s3" else f"install the fsspec driver ({error})"
        raise LoaderError(f"{scheme}:// needs an extra package: {hint}") from None
    except FileNotFoundError:
        raise LoaderError(f"job file not found: {source}") from None
    except PermissionError as error:
        raise LoaderError(f"access denied reading {source}: {error}") from None
    except Exception as error:
        raise LoaderError(f"cannot read {source}: {describe(error)}") from None
    if len(data) > options.max_bytes:
        raise _too_big(source, options.max_bytes)
    return data
