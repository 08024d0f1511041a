"""`helios plugins`: what is loaded, from where, and what each plugin registers."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from helios_kit.plugins import get_plugins


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, where each comes from, and its backends, spec loaders and repositories."""
    plugins = get_plugins()
    infos = plugins.plugin_infos()
    if as_json:
        import json

        click.echo(json.dumps([info.model_dump() for info in infos], indent=2))
        return
    table = Table(title="helios plugins", show_lines=False)
    for column in ("plugin", "from", "backends", "spec loaders", "repositories", "error"):
        table.add_column(column, overflow="fold")
    for info in infos:
        table.add_row(
            info.name,
            info.origin,
            ", ".join(info.backends) or "-",
            ", ".join(info.spec_loaders) or "-",
            ", ".join(info.repositories) or "-",
            info.error or "",
        )
    console = Console()
    if not console.is_terminal:  # piped: do not fold names into the column width of an imaginary terminal
        console = Console(width=200)
    console.print(table)
