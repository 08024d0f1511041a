"""`helios merge OUT CHUNK... [--audio-from COMPOSITION]`: join chunk files by stream copy, mix audio once.

Registered by the CLI group in :mod:`helios_kit.cli`. User errors surface as
:class:`~helios_kit.errors.HeliosError` subclasses, which the CLI prints as one line with a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path

import click

from helios_kit.render.audio import AudioPlan, discover_audio
from helios_kit.stitch import stitch


@click.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("chunks", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--audio-from",
    "audio_from",
    metavar="COMPOSITION",
    help="Mix the soundtrack declared in this composition (HTML file, folder or URL) over the whole video.",
)
@click.option(
    "--audio-offset",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Timeline time (s) of the output's first frame, when the job starts after frame 0.",
)
@click.option(
    "--expected-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse the merge unless the chunks hold exactly this many frames.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
def merge_command(
    out: Path,
    chunks: tuple[Path, ...],
    audio_from: str | None,
    audio_offset: float,
    expected_frames: int | None,
    quiet: bool,
) -> None:
    """Join CHUNK files, in order, into OUT by stream copy (no re-encode).

    The chunks must share codec, size, frame rate, pixel format and time base. OUT is written atomically
    and its frame count is checked against the sum of the chunks'.
    """
    plan: AudioPlan | None = None
    if audio_from:
        plan = discover_audio(audio_from).model_copy(update={"timeline_start_s": audio_offset})
    result = stitch(list(chunks), out, audio=plan, expected_frames=expected_frames)
    if not quiet:
        audio_note = f", {result.audio_tracks} audio track(s) mixed" if result.audio_tracks else ""
        click.echo(
            f"{result.output}: {result.frames} frames, {result.duration_s:.3f} s "
            f"from {len(result.inputs)} chunk(s){audio_note}"
        )
