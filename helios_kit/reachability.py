"""Is a job's composition reachable? The check behind `helios job validate`, saying where it looked.

It follows the resolution rule of :func:`helios_kit.composition.resolve_composition` (docs/ARCHITECTURE.md,
"Where paths resolve") without downloading or rendering anything:

* `config.input` an http(s) URL: that URL (one GET, headers only);
* an fsspec URL (s3://, gs://, ...): that object or folder;
* a relative path: the job dir for a local job; for a job loaded from a URL the current directory, then
  relative to the job's URL (over http for an http(s) job, in the job's folder for an s3:// job, which is
  where a worker finds it);
* an absolute path: that path.

:func:`check_composition` answers a :class:`CompositionCheck`: every location tried, in order, and the
first one that holds the composition (None when none does).
"""

from __future__ import annotations

import posixpath
from urllib.parse import urljoin

from pydantic import BaseModel, Field

from helios_kit.composition.locations import is_http, is_local, job_dir_for, local_path, parent_url
from helios_kit.errors import describe
from helios_kit.spec import JobSpec

_HTTP_TIMEOUT_S = 15.0


class Looked(BaseModel):
    """One location tried, and what was there."""

    location: str
    found: bool
    note: str = ""


class CompositionCheck(BaseModel):
    """Where the composition of a job was looked for, and where it was found."""

    input: str
    looked: list[Looked] = Field(default_factory=list)

    @property
    def found(self) -> Looked | None:
        return next((item for item in self.looked if item.found), None)

    def describe_looked(self) -> str:
        return "; ".join(f"{item.location}{f' ({item.note})' if item.note else ''}" for item in self.looked)


def check_composition(spec: JobSpec, job_url: str) -> CompositionCheck:
    """Try the locations the job's composition resolves to, in the resolver's order, stopping at the first hit."""
    ref = spec.config.input
    check = CompositionCheck(input=ref)
    for location in candidate_locations(ref, job_url):
        looked = _probe(location)
        check.looked.append(looked)
        if looked.found:
            break
    return check


def candidate_locations(ref: str, job_url: str) -> list[str]:
    """Where `ref` (config.input) may be, in the order a worker or the client tries them."""
    if not is_local(ref):
        return [ref]
    path = local_path(ref)
    base = job_dir_for(job_url)
    if is_local(job_url) or path.is_absolute():
        return [str(path if path.is_absolute() else base / path)]
    remote = urljoin(parent_url(job_url) + "/", ref) if is_http(job_url) else f"{parent_url(job_url)}/{ref}"
    return [str(base / path), remote]


def _probe(location: str) -> Looked:
    if is_local(location):
        exists = local_path(location).exists()
        return Looked(location=location, found=exists, note="" if exists else "missing")
    if is_http(location):
        return _probe_http(location)
    return _probe_fsspec(location)


def _probe_http(url: str) -> Looked:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=_HTTP_TIMEOUT_S) as response:
            ok = response.status_code < 400
            return Looked(location=url, found=ok, note="" if ok else f"HTTP {response.status_code}")
    except httpx.HTTPError as error:
        return Looked(location=url, found=False, note=describe(error))


def _probe_fsspec(url: str) -> Looked:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        exists = bool(fs.exists(path.rstrip("/")))
    except ImportError as error:
        return Looked(location=url, found=False, note=f"no filesystem driver: {error}")
    except Exception as error:  # access denied, no such bucket, network
        return Looked(location=url, found=False, note=describe(error))
    name = posixpath.basename(url.rstrip("/"))
    return Looked(location=url, found=exists, note="" if exists else f"no {name} there")
