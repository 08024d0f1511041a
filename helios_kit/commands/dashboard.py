"""`helios dashboard`: serve the runs of a repository in a browser (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from helios_kit.commands.repo_option import open_named_repository, repository_option

if TYPE_CHECKING:
    from helios_kit.dashboard.server import DashboardServer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_server(host: str, port: int, repository: str | None) -> DashboardServer:
    """The dashboard over repository `repository` (None: $HELIOS_REPOSITORY, else sqlite), bound to host:port.

    Requests must name a loopback host when it listens on loopback (no DNS rebinding); any host otherwise.
    """
    from helios_kit.dashboard.app import create_app
    from helios_kit.dashboard.server import DashboardServer, bind
    from helios_kit.manager import JobManager

    manager = JobManager(open_named_repository(repository))
    sock = bind(host, port)
    hosts = list(LOOPBACK) if host in LOOPBACK else ["*"]
    return DashboardServer(create_app(manager, allowed_hosts=hosts), sock)


@click.command("dashboard")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@repository_option
def dashboard_command(port: int, host: str, repository: str | None) -> None:
    """Runs, their chunks, thumbnails and previews, updated live; cancel a run from its page."""
    server = build_server(host, port, repository)
    click.echo(f"dashboard: {server.url}")
    server.serve()
