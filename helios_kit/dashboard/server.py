"""Serving the dashboard with uvicorn on a socket bound first (so a taken port is one clear error, and port 0
picks a free one), in the foreground (`helios dashboard`) or in a thread (tests, embedding)."""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.applications import Starlette

from helios_kit.errors import HeliosError

#: Seconds uvicorn waits for open event streams at shutdown before closing them.
GRACEFUL_S = 1.0


class DashboardError(HeliosError):
    """The dashboard cannot serve (address in use, not allowed)."""

    retryable = False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; DashboardError naming the address when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise DashboardError(f"--host {host} --port {port}: cannot listen: {error.strerror or error}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class DashboardServer:
    """uvicorn serving `app` on `sock`; `url` says where."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve in this thread until interrupted (SIGINT/SIGTERM)."""
        self.server.run(sockets=[self.sock])

    def start(self) -> DashboardServer:
        """Serve in a background thread; returns once it accepts connections."""
        self.server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise DashboardError(f"dashboard at {self.url} stopped while starting")
            self.thread.join(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join()
        self.sock.close()
