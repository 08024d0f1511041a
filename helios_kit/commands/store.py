"""`helios store gc STORE`: remove what interrupted commits left in an artifact store (a folder or fsspec URL)."""

from __future__ import annotations

import click

from helios_kit.store import TEMPORARY_GRACE_S, ArtifactStore


@click.group("store")
def store_group() -> None:
    """Look after an artifact store."""


@store_group.command("gc")
@click.argument("store")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=TEMPORARY_GRACE_S,
    show_default=True,
    help="Seconds: younger temporaries may belong to a commit still in flight and are kept.",
)
def gc_command(store: str, older_than: float) -> None:
    """Remove the temporary objects of interrupted commits (`*.tmp-<hex>`, write probes) in STORE."""
    removed = ArtifactStore(store).sweep_temporaries(older_than_s=older_than)
    for rel in removed:
        click.echo(f"removed {rel}")
    click.echo(f"{len(removed)} temporar{'y' if len(removed) == 1 else 'ies'} removed from {store}")
