"""`--repository NAME[:LOCATION]` (or `$HELIOS_REPOSITORY`): which run repository a command reads and writes.

Every `helios job` command that touches run records and `helios dashboard` take it; the name is looked up
in the plugin registry (`register_repositories`), SQLite by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from helios_kit.repository import JobRepository

F = TypeVar("F", bound=Callable[..., object])


def repository_option(function: F) -> F:
    """Add `--repository` (envvar HELIOS_REPOSITORY) to a click command; the value arrives as `repository`."""
    return click.option(
        "--repository",
        "repository",
        envvar="HELIOS_REPOSITORY",
        default=None,
        metavar="NAME[:LOCATION]",
        help="Where runs are recorded: a registered repository (see `helios plugins`); default sqlite.",
    )(function)


def open_named_repository(name: str | None) -> JobRepository:
    """The repository `name` (None: `$HELIOS_REPOSITORY`, else sqlite) built by its plugin's factory."""
    from helios_kit.repository import open_repository

    return open_repository(name)
