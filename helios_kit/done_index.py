"""A job's done index: the done-manifests of its outputs kept together in one object of the store, so a
re-run on an object store reads one object instead of one manifest per chunk.

The index is a cache, never a source of truth. It maps each manifest (its path relative to the store root)
to the manifest's exact bytes, and an entry is used only when those bytes hash to the checksum that the
store's own listing, read in the same run, gives for that manifest (:func:`listed_md5`: on S3 the ETag of an
object written in one PUT is the MD5 of its bytes). So a stale index (a chunk re-rendered, its manifest
removed or rewritten since), a partial one (runners that wrote it at once, a run killed before writing it)
or a corrupt one only costs a GET of the manifests it does not vouch for: it can never make a missing or
changed chunk count as done, nor outvote the manifest the store holds. Stores whose listing carries no
content MD5 (SSE-KMS or multipart ETags, GCS composite objects, other fsspec stores) never use it.

Lives at `<store>/.helios/done/<job_id>.json.gz` (gzip: the manifests of one job repeat themselves).
Written by the client at the end of a run when it learned manifests the index lacks (from the store, from
the results of the workers that committed them, or from its own commits), merged with the index as it is
just before the write. Two runners writing at once may drop each other's entries: the next run then reads
those manifests itself and writes them back, so no conditional write is needed for correctness.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

INDEX_DIR = ".helios/done"
INDEX_VERSION = 1
_MD5 = re.compile(r"^[0-9a-f]{32}$")


class DoneIndex(BaseModel):
    """What the index object holds: the job's manifests by path (relative to the store root) → exact text."""

    version: int = INDEX_VERSION
    job_id: str
    manifests: dict[str, str] = {}


def index_rel(job_id: str) -> str:
    """The index's path relative to the store root."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id) or "_"
    return f"{INDEX_DIR}/{safe}.json.gz"


def listed_md5(info: dict[str, Any]) -> str | None:
    """The MD5 (hex) of an object's bytes as an fsspec listing entry states it, or None when it does not:
    an S3 ETag is one only for an unencrypted or SSE-S3 object uploaded in one PUT (32 hex digits; a
    multipart ETag has a `-N` suffix, an SSE-KMS/SSE-C one is not an MD5 and then never matches); GCS
    lists `md5Hash` (base64) for every object but composite ones."""
    md5_hash = info.get("md5Hash")
    if isinstance(md5_hash, str):
        try:
            digest = base64.b64decode(md5_hash, validate=True)
        except ValueError:
            return None
        return digest.hex() if len(digest) == 16 else None
    etag = str(info.get("ETag") or "").strip('"').lower()
    return etag if _MD5.match(etag) else None


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def vouched(text: str | None, md5: str | None) -> bytes | None:
    """The entry's bytes when they are exactly the object whose listed MD5 is `md5`, else None."""
    if text is None or md5 is None:
        return None
    data = text.encode()
    return data if md5_of(data) == md5 else None


def encode(index: DoneIndex) -> bytes:
    return gzip.compress(index.model_dump_json().encode(), compresslevel=6, mtime=0)


def decode(data: bytes) -> DoneIndex | None:
    """The index in `data`, or None when it is not one of this version (then it is ignored, and rewritten)."""
    try:
        index = DoneIndex.model_validate_json(gzip.decompress(data))
    except (OSError, EOFError, ValidationError, ValueError):
        return None
    return index if index.version == INDEX_VERSION else None
