"""What kind of location a reference is, and where a job's relative paths resolve: the one scheme helper.

Every module that must tell a local path from a URL asks here (`scheme_of`, `is_local`, `is_http`), so the
client that checks the store and the worker that renders agree on what a reference means.

The job-dir rule (docs/ARCHITECTURE.md, "Where paths resolve"): a job file's relative paths resolve in its
folder; for a job loaded from a URL the job dir is the current directory.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from helios_kit.errors import StoreError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme_of(ref: str) -> str:
    """The URL scheme in lower case: `https` for https://..., `s3`, ...; `file` for paths and file:// URLs."""
    match = _SCHEME.match(ref)
    return match.group(1).lower() if match else "file"


def is_local(ref: str) -> bool:
    """A filesystem path (or a file:// URL)."""
    return scheme_of(ref) == "file"


def is_http(ref: str) -> bool:
    return scheme_of(ref) in ("http", "https")


def local_path(ref: str) -> Path:
    """The path of a local reference (file:// stripped, ~ expanded)."""
    return Path(ref.removeprefix("file://")).expanduser()


def parent_url(url: str) -> str:
    """`s3://bucket/jobs/intro.json` → `s3://bucket/jobs` (a URL without a path is its own parent)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    return url.rsplit("/", 1)[0] if "/" in rest else url


def job_dir_for(job_url: str) -> Path:
    """Where a job's relative paths resolve: a local job file's folder; the current directory for a URL."""
    if is_local(job_url):
        return local_path(job_url).resolve().parent
    return Path.cwd()


def default_store_url(job_url: str) -> str:
    """The artifact store a worker uses when none is given: a local job's folder, an fsspec job's folder
    (`s3://bucket/jobs/` mirrors the local layout); StoreError for an http(s) job (no writable folder)."""
    if is_local(job_url):
        return str(local_path(job_url).resolve().parent)
    if is_http(job_url):
        raise StoreError(
            f'job {job_url} is served over http(s): give the artifact store (--store / "store")', retryable=False
        )
    return parent_url(job_url) + "/"


_S3_SESSIONS: dict[tuple[tuple[str, str], ...], Any] = {}
_S3_SESSIONS_LOCK = threading.Lock()


def url_to_fs(url: str, **storage_options: Any) -> tuple[Any, str]:
    """`fsspec.core.url_to_fs`, with one aiobotocore session per process for S3 (per AWS environment):
    the loader, the composition and the store each make their own S3 filesystem (their options differ), and
    each would otherwise parse botocore's service models again to make its client. Left alone when the
    options name a session or a profile (s3fs builds that session itself)."""
    import fsspec

    if scheme_of(url) in ("s3", "s3a") and not {"session", "profile"} & storage_options.keys():
        storage_options = {**storage_options, "session": _s3_session()}
    return fsspec.core.url_to_fs(url, **storage_options)


def _s3_session() -> Any:
    from aiobotocore.session import AioSession

    environment = tuple(sorted((key, value) for key, value in os.environ.items() if key.startswith("AWS_")))
    with _S3_SESSIONS_LOCK:
        session = _S3_SESSIONS.get(environment)
        if session is None:
            session = _S3_SESSIONS[environment] = AioSession()
            parsers = session.get_component("response_parser_factory")
            parsers.set_parser_defaults(timestamp_parser=parse_s3_timestamp)
        return session


def parse_s3_timestamp(value: Any) -> datetime:
    """A timestamp in an S3 response, as botocore's own parser gives it (an aware UTC datetime), but ISO 8601
    in UTC ("2026-12-03T07:27:30.000Z", every LastModified of a listing) by `datetime.fromisoformat`: botocore
    hands each to dateutil (~60 us against ~0.2 us), which made timestamps a third of the time a run's client
    spent parsing listings of a 200-chunk job's folder. Anything else goes to botocore's parser."""
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)
