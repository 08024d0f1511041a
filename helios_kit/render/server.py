"""A local HTTP server on 127.0.0.1 that serves a composition's folder for the duration of a render.

Browsers refuse ES modules (and fetch, workers, some fonts) over ``file://``, so a local composition is
always loaded from ``http://127.0.0.1:<port>/``. The server binds the loopback interface only, on a free
port, never logs to stderr, and stops with the render session.

It serves only the composition's own real files: no dotfiles or dot-folders (`.env`, `.git/`), nothing
whose real path (after resolving symlinks) leaves the folder. It records every file the page asked for
(`served()`: path, size, sha256; absent when missing): the render's dependency list, which the chunk's
done-manifest keeps (docs/ARCHITECTURE.md, "Incrementality").
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from helios_kit.composition.deps import FILE_HASHER, Dependency, FileHasher, file_dependency

_EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
}


_BYTE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Recorder:
    """The files requested during a render, each fingerprinted once (thread-safe)."""

    def __init__(self, root: Path, hasher: FileHasher) -> None:
        self.root = root
        self.hasher = hasher
        self._seen: dict[str, Dependency] = {}
        self._lock = threading.Lock()

    def record(self, rel: str) -> None:
        with self._lock:
            if rel in self._seen:
                return
        dependency = file_dependency(self.root, rel, self.hasher)
        with self._lock:
            self._seen.setdefault(rel, dependency)

    def dependencies(self) -> list[Dependency]:
        with self._lock:
            return [self._seen[rel] for rel in sorted(self._seen)]


def _request_rel(raw_path: str) -> str:
    """The request's path relative to the served root (query and fragment dropped, percent-decoded)."""
    return unquote(urlsplit(raw_path).path).lstrip("/")


def _allowed(root: Path, rel: str) -> bool:
    """No dot-named part, and a real path (links resolved) inside the root."""
    parts = [part for part in rel.split("/") if part]
    if any(part.startswith(".") for part in parts):
        return False
    try:
        (root / rel).resolve().relative_to(root)
    except (OSError, ValueError):
        return False
    return True


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **_EXTRA_TYPES}
    _range_left: int | None = None

    def send_head(self) -> Any:
        """Serve only allowed paths, record what is asked for, then the file (single byte ranges as 206:
        without them Chromium cannot seek a <video>, its currentTime stays 0)."""
        recorder: _Recorder = self.server.recorder  # type: ignore[attr-defined]
        rel = _request_rel(self.path)
        if not _allowed(recorder.root, rel):
            self.send_error(404, "File not found")
            return None
        folder = recorder.root / rel
        if not folder.is_dir():
            recorder.record(rel)
        elif (folder / "index.html").is_file():
            recorder.record(f"{rel.rstrip('/')}/index.html".lstrip("/"))
        return self._send_file_head()

    def list_directory(self, path: Any) -> Any:
        self.send_error(404, "File not found")  # a composition's folder is not browsable
        return None

    def _send_file_head(self) -> Any:
        match = _BYTE_RANGE.match(self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if not match or not match.group(0)[6:].strip("-") or not os.path.isfile(path):
            return super().send_head()
        try:
            f = open(path, "rb")  # noqa: SIM115 - returned to the base class, which closes it
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f.seek(start)
        self._range_left = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        left, self._range_left = self._range_left, None
        if left is None:
            super().copyfile(source, outputfile)
            return
        while left > 0:
            chunk = source.read(min(64 * 1024, left))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


#: How often the serving loop looks for a shutdown request: ``close()`` waits up to this long. The standard
#: library's 0.5 s made every render wait 0.25 s on average at its end, twice in a `helios render` with audio.
SHUTDOWN_POLL_S = 0.02


#: Connections the kernel queues for the serving thread to accept (the listen backlog). The standard
#: library's 5 overflowed when two lanes' browsers loaded an ES-module composition at once (six connections
#: each): the kernel dropped the extra SYNs and Chromium sent them again a second later, so 1 render in 6
#: of examples/helios-counter took 1.1 s longer (TcpExtListenOverflows counted the drops).
LISTEN_BACKLOG = 128


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True


class CompositionServer:
    """Serve `root` on 127.0.0.1; `url_for(path)` gives the URL of a file under it; `served()` what the page
    asked for. A context manager."""

    def __init__(self, root: Path, hasher: FileHasher = FILE_HASHER) -> None:
        self.root = Path(root).resolve()
        for suffix, kind in _EXTRA_TYPES.items():
            mimetypes.add_type(kind, suffix)
        handler = partial(_QuietHandler, directory=str(self.root))
        self._recorder = _Recorder(self.root, hasher)
        self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._httpd.recorder = self._recorder  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        serve = partial(self._httpd.serve_forever, poll_interval=SHUTDOWN_POLL_S)
        self._thread = threading.Thread(target=serve, name="helios-http", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url_for(self, path: Path) -> str:
        relative = Path(path).resolve().relative_to(self.root).as_posix()
        return self.base_url + quote(relative)

    def served(self) -> list[Dependency]:
        """Every file the page asked for so far (sorted by path), with its size and sha256."""
        return self._recorder.dependencies()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> CompositionServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
