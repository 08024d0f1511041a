"""`helios batch TEMPLATE ROWS -o 'out/{id}.mp4'`: one video per row of props, as one DAG; a thin layer over
:func:`helios_kit.api.batch` (and :func:`helios_kit.api.emit_batch` for `--emit-batch DIR`), plus the one
rich progress display over the whole batch (videos done, frames, frames/s, ETA)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click

from helios_kit.commands.job import _BACKEND_PARAMS, _backend_options, backup_options, backup_policy
from helios_kit.commands.render import CAPTURE_CHOICES, _codec_name_flag
from helios_kit.protocol import EventKind


class BatchProgress:
    """A sink of batch events drawing videos done, frames, frames/s and ETA with rich (on stderr)."""

    def __init__(self, videos: int, frames: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.videos = self.progress.add_task("videos", total=videos, rate="")
        self.frames = self.progress.add_task("frames", total=frames, rate="")
        self.started = time.monotonic()
        self.rendered = 0
        self.lock = threading.Lock()

    def __enter__(self) -> BatchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, tagged: Any) -> None:
        event = tagged.event
        with self.lock:
            if event.kind in (EventKind.RENDERED, EventKind.SKIPPED):
                self.progress.advance(self.frames, event.frames)
                self.rendered += event.frames if event.kind is EventKind.RENDERED else 0
                rate = self.rendered / max(time.monotonic() - self.started, 1e-6)
                self.progress.update(self.frames, rate=f"{rate:.1f} frames/s")
            elif event.kind in (EventKind.MERGED, EventKind.MERGE_SKIPPED):
                self.progress.advance(self.videos)
            elif event.kind in (EventKind.FAILED, EventKind.MERGE_FAILED):
                self.progress.console.print(f"{tagged.output}: {event.error}")


@click.command("batch")
@click.argument("template")
@click.argument("rows", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, help="Output template: row keys and {index}, e.g. 'out/{id}.mp4'.")
@click.option(
    "--emit-batch", "emit_dir", default=None, help="Write one JobSpec per row and batch.json here; render nothing."
)
@click.option("--backend", default="local", show_default=True, help="Where chunks run (see `helios plugins`).")
@click.option("--concurrency", "-j", type=click.IntRange(min=1), default=None, help="Chunks at once (default: CPUs).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--retry-delay", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--chunk-timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--force", is_flag=True, help="Render every video even when complete.")
@backup_options
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds per video.")
@click.option("--frame-count", type=click.IntRange(min=1), default=None, help="Frames per video.")
@click.option("--width", type=click.IntRange(min=1), default=None)
@click.option("--height", type=click.IntRange(min=1), default=None)
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--capture", type=click.Choice(CAPTURE_CHOICES), default="auto", show_default=True)
@click.option("--video-codec", default="libx264", show_default=True, callback=_codec_name_flag)
@click.option("--audio-codec", default="aac", show_default=True, callback=_codec_name_flag)
@click.option("--pixel-format", default="yuv420p", show_default=True, callback=_codec_name_flag)
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None)
@click.option("--chunk-frames", type=click.IntRange(min=1), default=300, show_default=True, help="Frames per chunk.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display, only failures and the summary.")
def batch_command(
    template: str,
    rows: str,
    output: str,
    emit_dir: str | None,
    backend: str,
    quiet: bool,
    backups: bool | None,
    backup_after: float,
    backup_factor: float,
    **values: Any,
) -> None:
    """Render TEMPLATE once per row of ROWS (JSONL, CSV or a JSON array): each row is the props of one video.

    One DAG over every video's chunks and merges: a re-run renders only what is missing or changed, a
    failing row does not stop the others. A prop naming a file (relative to ROWS) is loaded into the page.
    Straggler backups, as for `helios job run`, judge each chunk against the median chunk of the whole batch.
    """
    from helios_kit import api

    given = _backend_options(backend, {k: v for k, v in values.items() if k.startswith("backend__")})
    settings = {k: v for k, v in values.items() if not k.startswith("backend__") and v is not None}
    if emit_dir is not None:
        run_keys = ("concurrency", "retries", "retry_delay", "chunk_timeout", "force")
        index = api.emit_batch(template, rows, emit_dir, output=output, **_without(settings, run_keys))
        click.echo(f"wrote {index} and the job files beside it (helios job run {emit_dir}/<jobId>.json)")
        return
    settings["backups"] = backup_policy(backups, backup_after, backup_factor)
    report = _run(template, rows, output, backend, given, settings, quiet)
    for video in report.failed:
        click.echo(f"error: {video.error}", err=True)
    click.echo(report.summary_line())
    if not report.ok:
        sys.exit(130 if report.cancelled else 1)


def _without(settings: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key not in keys}


def _run(template: str, rows: str, output: str, backend: str, given: dict, settings: dict, quiet: bool) -> Any:
    """Plan, then run with the progress display (on a terminal) and SIGINT/SIGTERM as a clean cancel."""
    import signal

    from helios_kit import api
    from helios_kit.batching.plan import BatchSettings
    from helios_kit.batching.run import batch_run_options, run_batch
    from helios_kit.plugins import make_backend

    render_settings = {key: value for key, value in settings.items() if key in BatchSettings.model_fields}
    plan = api.plan_rows(template, rows, output, **render_settings)
    options = batch_run_options(_without(settings, tuple(render_settings)))
    cancel = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: cancel.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with make_backend(backend, given) as runner:
            if quiet or not sys.stderr.isatty():
                return run_batch(plan, runner, options, cancel=cancel)
            frames = sum(video.frames for video in plan.planned)
            with BatchProgress(len(plan.planned), frames) as progress:
                return run_batch(plan, runner, options, cancel=cancel, sinks=[progress])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


batch_command.params.extend(_BACKEND_PARAMS)
