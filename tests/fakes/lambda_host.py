"""A handler host for the Lambda emulator: one process that runs many handler invocations at once, in threads.

The emulator's default runs each invocation in a process pool of `workers` processes, one invocation per
process at a time, which caps a fan-out at `workers` invocations in flight. For fan-out measurements the
emulator instead starts `workers` of these hosts (``LambdaEmulator(threads=True)``): each serves
``POST /invoke`` on 127.0.0.1 with ``{"reference", "event", "timeout", "requestId"}`` and answers what
:func:`fakes.lambda_emulator.call_handler` returns, every request in its own thread, so a host holds as many
invocations as the emulator sends it. Handlers that wait (on the store, on a fake render's sleep) then
overlap as Lambda's instances do; only their CPU work shares the machine's cores.

    python tests/fakes/lambda_host.py REFERENCE   # prints "port <n>" once the handler is imported
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the emulator forwards a whole wave at once


def serve(reference: str) -> None:
    from fakes.lambda_emulator import call_handler
    from helios_kit.plugins import resolve_reference

    resolve_reference(reference)  # import (and warm) the handler before saying we are up
    with contextlib.suppress(ImportError):  # and what it reads the store with: start-up is not measured here
        import s3fs  # noqa: F401

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            call = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            outcome = call_handler(call["reference"], call["event"], call["timeout"], call["requestId"])
            data = json.dumps(outcome).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


def _exit_with_parent() -> None:
    """The emulator holds our stdin open: its end (a stop, or the emulator's process dying) ends this host."""
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `fakes` importable
    serve(sys.argv[1])
