"""`helios job ...`: validate a JobSpec, run it, and track jobs (status, list, cancel)."""

from __future__ import annotations

import click

from helios_kit.loaders import LoaderOptions, load_spec


@click.group("job")
def job_group() -> None:
    """Validate, run and track JobSpecs (job.json files, http(s):// or s3:// URLs)."""


@job_group.command("validate")
@click.argument("source")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for a remote spec (default 30).")
def validate_command(source: str, timeout: float | None) -> None:
    """Load and validate a JobSpec; print a summary."""
    options = LoaderOptions() if timeout is None else LoaderOptions(timeout=timeout)
    spec, job_dir = load_spec(source, options)
    config = spec.config
    click.echo(
        f"valid: job {spec.job_id}: {config.frame_count} frames "
        f"[{config.start_frame}, {config.end_frame}) at {config.fps:g} fps, {config.width}x{config.height}, "
        f"{len(spec.chunks)} chunk{'s' if len(spec.chunks) != 1 else ''} → {spec.merge.output_file}"
    )
    click.echo(f"  input: {config.input}  (job dir: {job_dir})")
    for chunk in spec.chunks:
        click.echo(
            f"  chunk {chunk.id}: frames [{chunk.start_frame}, {chunk.end_frame}) ({chunk.frame_count}) "
            f"→ {chunk.output_file}"
        )
    click.echo(f"  merge: {len(spec.merge.inputs)} inputs → {spec.merge.output_file}")
