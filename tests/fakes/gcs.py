"""Google Cloud Storage on 127.0.0.1: the JSON API subset gcsfs speaks, with generations and preconditions.

The PyPI emulators checked (gcp-storage-emulator 2026.7.19) ignore `ifGenerationMatch`, so a lease test
against them could not fail. This one is small and faithful where leases and the store need it:

* objects insert: `uploadType=media` (name in the query), `multipart` (gcsfs' `pipe`), `resumable` (gcsfs'
  large writes: a session URL, `Content-Range` chunks, 308 until the last);
* get (`alt=media`, with `Range`), metadata get, list (`prefix`, `delimiter`, `prefixes`), delete,
  `rewriteTo` (copy) and `moveTo` (rename);
* every write gives the object a new generation (a counter for the whole server); `ifGenerationMatch`
  (0: the object must not exist) and `ifGenerationNotMatch` are checked under one lock with the write, and
  a failed one answers 412 `conditionNotMet` as GCS does.

:func:`gcs_server` starts it on a free port, creates buckets and exports `STORAGE_EMULATOR_HOST` (which gcsfs
reads) and `FSSPEC_GCS_TOKEN=anon` (no credential lookup, so nothing is asked of a metadata server);
subprocesses inherit both. `requests` counts what clients asked for (method and API path).

gcsfs >= 2026 exports an `ExtendedGcsFileSystem` that first asks the bucket's type over gRPC (TLS), which
this HTTP fake cannot answer (a minute of retries per bucket); `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`,
set when this module is imported (before gcsfs is), keeps the JSON-API class.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fakes.loopback import LoopbackHTTPServer

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


class GcsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class StoredObject:
    data: bytes
    generation: int
    created: str
    content_type: str = "application/octet-stream"


@dataclass
class Upload:
    bucket: str
    name: str
    conditions: dict[str, str]
    data: bytearray = field(default_factory=bytearray)


class FakeGcs:
    """The buckets, objects and resumable uploads of the fake; all state changes under one lock."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.uploads: dict[str, Upload] = {}
        self.lock = threading.Lock()
        self.generations = itertools.count(1_000_001)
        self.requests: Counter[str] = Counter()
        #: Writes with a generation precondition: "met" and "failed" (answered 412).
        self.preconditions: Counter[str] = Counter()

    # -- objects ---------------------------------------------------------------------------------------
    def _bucket(self, bucket: str) -> dict[str, StoredObject]:
        if bucket not in self.buckets:
            raise GcsError(404, f"The specified bucket does not exist: {bucket}")
        return self.buckets[bucket]

    def _check(self, current: StoredObject | None, conditions: dict[str, str]) -> None:
        try:
            self._check_generation(current, conditions)
        except GcsError:
            self.preconditions["failed"] += 1
            raise
        if conditions:
            self.preconditions["met"] += 1

    @staticmethod
    def _check_generation(current: StoredObject | None, conditions: dict[str, str]) -> None:
        generation = current.generation if current is not None else 0
        match = conditions.get("ifGenerationMatch")
        if match is not None and int(match) != generation:
            raise GcsError(412, "At least one of the pre-conditions you specified did not hold.")
        not_match = conditions.get("ifGenerationNotMatch")
        if not_match is not None and int(not_match) == generation:
            raise GcsError(412, "At least one of the pre-conditions you specified did not hold.")

    def put(self, bucket: str, name: str, data: bytes, conditions: dict[str, str], content_type: str) -> dict:
        with self.lock:
            objects = self._bucket(bucket)
            self._check(objects.get(name), conditions)
            stored = StoredObject(bytes(data), next(self.generations), _now(), content_type)
            objects[name] = stored
            return self.resource(bucket, name, stored)

    def get(self, bucket: str, name: str, conditions: dict[str, str]) -> StoredObject:
        with self.lock:
            stored = self._bucket(bucket).get(name)
            if stored is None:
                raise GcsError(404, f"No such object: {bucket}/{name}")
            self._check(stored, conditions)
            return stored

    def delete(self, bucket: str, name: str, conditions: dict[str, str]) -> None:
        with self.lock:
            objects = self._bucket(bucket)
            if name not in objects:
                raise GcsError(404, f"No such object: {bucket}/{name}")
            self._check(objects[name], conditions)
            del objects[name]

    def copy(self, source: tuple[str, str], dest: tuple[str, str], conditions: dict[str, str], *, move: bool) -> dict:
        with self.lock:
            stored = self._bucket(source[0]).get(source[1])
            if stored is None:
                raise GcsError(404, f"No such object: {source[0]}/{source[1]}")
            target = self._bucket(dest[0])
            self._check(target.get(dest[1]), conditions)
            copied = StoredObject(stored.data, next(self.generations), _now(), stored.content_type)
            target[dest[1]] = copied
            if move:
                del self.buckets[source[0]][source[1]]
            return self.resource(dest[0], dest[1], copied)

    def listing(self, bucket: str, prefix: str, delimiter: str) -> dict:
        with self.lock:
            names = sorted(name for name in self._bucket(bucket) if name.startswith(prefix))
            items, prefixes = [], set()
            for name in names:
                rest = name[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                else:
                    items.append(self.resource(bucket, name, self.buckets[bucket][name]))
        out: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if prefixes:
            out["prefixes"] = sorted(prefixes)
        return out

    @staticmethod
    def resource(bucket: str, name: str, stored: StoredObject) -> dict:
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{stored.generation}",
            "bucket": bucket,
            "name": name,
            "size": str(len(stored.data)),
            "md5Hash": base64.b64encode(hashlib.md5(stored.data, usedforsecurity=False).digest()).decode(),
            "generation": str(stored.generation),
            "metageneration": "1",
            "contentType": stored.content_type,
            "timeCreated": stored.created,
            "updated": stored.created,
            "storageClass": "STANDARD",
        }

    def names(self, bucket: str) -> list[str]:
        with self.lock:
            return sorted(self._bucket(bucket))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _conditions(query: dict[str, list[str]]) -> dict[str, str]:
    return {key: query[key][0] for key in ("ifGenerationMatch", "ifGenerationNotMatch") if key in query}


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict, bytes, str]:
    """(metadata, data, data content type) of a `multipart/related` upload body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    _, meta_part, rest = body.split(b"--" + boundary, 2)
    data_part = rest.rsplit(b"--" + boundary + b"--", 1)[0]
    _, _, meta = meta_part.replace(b"\r\n", b"\n").strip(b"\n").partition(b"\n\n")
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data_part[:400] else b"\n\n"
    head, _, data = data_part.partition(sep)
    data = data.removesuffix(b"\r\n") if sep == b"\r\n\r\n" else data.removesuffix(b"\n")
    kind = next(
        (
            line.split(b":", 1)[1].strip().decode()
            for line in head.splitlines()
            if line.lower().startswith(b"content-type")
        ),
        "application/octet-stream",
    )
    return json.loads(meta or b"{}"), data, kind


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gcs: FakeGcs

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/")]
        query = parse_qs(url.query)
        body = self._body()
        self.gcs.requests[f"{self.command} {'/'.join(parts[:4])}"] += 1
        try:
            self._route(parts, query, body)
        except GcsError as error:
            self._json(error.code, {"error": {"code": error.code, "message": error.message, "errors": []}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def _route(self, parts: list[str], query: dict[str, list[str]], body: bytes) -> None:
        conditions = _conditions(query)
        # ['', 'upload'|'download', 'storage', 'v1', 'b', bucket, 'o', name]
        if parts[1:4] == ["upload", "storage", "v1"] and len(parts) >= 7:
            return self._upload(parts[5], query, body, conditions)
        if parts[1:4] == ["download", "storage", "v1"] and len(parts) >= 8:
            return self._download(parts[5], "/".join(parts[7:]), conditions)
        # ['', 'storage', 'v1', 'b', bucket, 'o', name]
        if parts[1:4] != ["storage", "v1", "b"]:
            raise GcsError(404, f"not found: {self.path}")
        if len(parts) == 4 or (len(parts) == 5 and not parts[4]):  # buckets: list or create
            if self.command == "POST":
                name = json.loads(body or b"{}")["name"]
                with self.gcs.lock:
                    self.gcs.buckets.setdefault(name, {})
                return self._json(200, {"kind": "storage#bucket", "name": name, "id": name})
            return self._json(200, {"kind": "storage#buckets", "items": [{"name": b} for b in self.gcs.buckets]})
        bucket = parts[4]
        if len(parts) == 5:
            self.gcs._bucket(bucket)
            return self._json(200, {"kind": "storage#bucket", "name": bucket, "id": bucket})
        if len(parts) == 6 or (len(parts) == 7 and not parts[6]):
            prefix, delimiter = query.get("prefix", [""])[0], query.get("delimiter", [""])[0]
            return self._json(200, self.gcs.listing(bucket, prefix, delimiter))
        return self._object(bucket, parts[6:], query, conditions)

    def _object(self, bucket: str, rest: list[str], query: dict[str, list[str]], conditions: dict[str, str]) -> None:
        for verb in ("rewriteTo", "moveTo"):
            if verb in rest:  # name/rewriteTo/b/B2/o/NAME2 or name/moveTo/o/NAME2
                at = rest.index(verb)
                name, tail = "/".join(rest[:at]), rest[at + 1 :]
                dest = (tail[1], "/".join(tail[3:])) if tail[0] == "b" else (bucket, "/".join(tail[1:]))
                resource = self.gcs.copy((bucket, name), dest, conditions, move=verb == "moveTo")
                if verb == "moveTo":
                    return self._json(200, resource)
                size = resource["size"]
                answer = {"kind": "storage#rewriteResponse", "done": True, "resource": resource}
                return self._json(200, {**answer, "totalBytesRewritten": size, "objectSize": size})
        name = "/".join(rest)
        if self.command == "DELETE":
            self.gcs.delete(bucket, name, conditions)
            return self._send(204)
        stored = self.gcs.get(bucket, name, conditions)
        if query.get("alt", [""])[0] == "media":
            return self._media(stored)
        return self._json(200, self.gcs.resource(bucket, name, stored))

    def _download(self, bucket: str, name: str, conditions: dict[str, str]) -> None:
        self._media(self.gcs.get(bucket, name, conditions))

    def _media(self, stored: StoredObject) -> None:
        data, status = stored.data, 200
        extra = {"Content-Type": stored.content_type, "x-goog-generation": str(stored.generation)}
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes=") and data:
            first, _, last = spec[6:].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, extra)

    def _upload(self, bucket: str, query: dict[str, list[str]], body: bytes, conditions: dict[str, str]) -> None:
        kind = query.get("uploadType", [""])[0]
        self.gcs.requests[f"upload {kind}"] += 1
        if "upload_id" in query:
            return self._resumable_chunk(query["upload_id"][0], body)
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        if kind == "media":
            return self._json(200, self.gcs.put(bucket, query["name"][0], body, conditions, content_type))
        if kind == "multipart":
            meta, data, data_type = _parse_multipart(body, content_type)
            return self._json(200, self.gcs.put(bucket, meta["name"], data, conditions, data_type))
        if kind == "resumable":
            name = json.loads(body or b"{}").get("name") or query["name"][0]
            self.gcs._bucket(bucket)
            upload_id = uuid.uuid4().hex
            self.gcs.uploads[upload_id] = Upload(bucket, name, conditions)
            host = self.headers.get("Host", "127.0.0.1")
            location = f"http://{host}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&upload_id={upload_id}"
            return self._json(200, {}, {"Location": location})
        raise GcsError(400, f"unsupported uploadType {kind!r}")

    def _resumable_chunk(self, upload_id: str, body: bytes) -> None:
        upload = self.gcs.uploads.get(upload_id)
        if upload is None:
            raise GcsError(404, "no such upload")
        if self.command == "DELETE":
            self.gcs.uploads.pop(upload_id, None)
            return self._send(499)
        upload.data.extend(body)
        total = self.headers.get("Content-Range", "").rpartition("/")[2]
        if total == "*" or (total.isdigit() and len(upload.data) < int(total)):
            return self._send(308, b"", {"Range": f"bytes=0-{len(upload.data) - 1}"} if upload.data else {})
        self.gcs.uploads.pop(upload_id, None)
        self._json(
            200,
            self.gcs.put(upload.bucket, upload.name, bytes(upload.data), upload.conditions, "application/octet-stream"),
        )


@contextmanager
def gcs_server(*buckets: str) -> Iterator[FakeGcs]:
    """Run the fake on 127.0.0.1 (free port) with `buckets`; point gcsfs (this process and its children) at
    it; yields the fake (its `.endpoint` is the URL)."""
    import gcsfs

    gcs = FakeGcs()
    for bucket in buckets:
        gcs.buckets[bucket] = {}
    handler = type("Handler", (_Handler,), {"gcs": gcs})
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-gcs", daemon=True).start()
    gcs.endpoint = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    env = {"STORAGE_EMULATOR_HOST": gcs.endpoint, "FSSPEC_GCS_TOKEN": "anon"}  # type: ignore[attr-defined]
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    _set_fsspec_config({"token": "anon"})
    gcsfs.GCSFileSystem.clear_instance_cache()
    try:
        yield gcs
    finally:
        server.shutdown()
        server.server_close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _set_fsspec_config(None)
        gcsfs.GCSFileSystem.clear_instance_cache()


def _set_fsspec_config(options: dict[str, str] | None) -> None:
    """fsspec reads FSSPEC_GCS_TOKEN at import; this process set it later, so say it in the live config."""
    import fsspec.config

    if options is None:
        fsspec.config.conf.pop("gcs", None)
    else:
        fsspec.config.conf["gcs"] = dict(options)
