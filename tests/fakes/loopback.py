"""The HTTP server every stand-in in the tests runs on 127.0.0.1 (page servers, fake GCS, Lambda, metadata).

The standard library's ``ThreadingHTTPServer`` listens with a backlog of 5: a browser opens six connections
at once, two lanes twelve, and a pool of workers as many, so the kernel dropped the extra SYNs and each
waited for the client's retry a second later (TcpExtListenOverflows). The product's composition server has
the same fix (helios_kit/render/server.py, ``LISTEN_BACKLOG``).
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from helios_kit.render.server import LISTEN_BACKLOG


class LoopbackHTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
