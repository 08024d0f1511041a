"""`helios render`: render a composition to a video file, or (with `--emit-job`) plan a JobSpec without rendering.

Settings come from the command line, else from the composition's `<meta name="helios" content='{...}'>`
tag (width, height, fps, duration), else from the page's @helios-project/core instance (`window.helios`,
read by loading the page once), else the defaults (1280x720 at 30 fps). The original Helios CLI's
`--mode` (= `--capture`) and `--quality` (= `--crf`) are accepted, so Helios users' scripts keep working.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from helios_kit.composition import CompositionInput, resolve_input
from helios_kit.errors import HeliosError, SpecError
from helios_kit.frames import frames_for_duration
from helios_kit.spec import CaptureMode, RenderConfig, check_codec_name, parse_json_object

if TYPE_CHECKING:
    from helios_kit.render.probe import PageSettings

CAPTURE_CHOICES = [mode.value for mode in CaptureMode]


def frame_count_from(duration: float | None, frame_count: int | None, fps: float, meta_duration: float | None) -> int:
    """Frames to render: `--frame-count`, else `ceil(--duration x fps)`, else the composition's duration."""
    if frame_count is not None and duration is not None:
        raise click.UsageError("give --duration or --frame-count, not both")
    if frame_count is not None:
        if frame_count <= 0:
            raise click.BadParameter(f"must be > 0, got {frame_count}", param_hint="--frame-count")
        return frame_count
    seconds = duration if duration is not None else meta_duration
    if seconds is None:
        raise click.UsageError("how long? give --duration SECONDS or --frame-count N (or a helios meta tag)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise click.BadParameter(f"must be > 0, got {seconds:g}", param_hint="--duration")
    return frames_for_duration(seconds, fps)


def _codec_name_flag(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`--video-codec`, `--audio-codec`, `--pixel-format`: a name like libx264, never an ffmpeg option."""
    try:
        return check_codec_name(value)
    except ValueError as error:
        raise SpecError(f"--{param.name.replace('_', '-')}: {error}") from None


def _props_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    """`--props JSON` / `--props-file FILE`: a JSON object, or one line naming the flag."""
    if value is None:
        return None
    flag = "--" + (param.name or "props").replace("_", "-")
    if param.name == "props_file":
        try:
            value = Path(value).read_text(encoding="utf-8")
        except OSError as error:
            raise SpecError(f"{flag}: cannot read {value}: {error.strerror or error}") from None
    return parse_json_object(value, flag)


@click.command("render")
@click.argument("input_ref", metavar="INPUT")
@click.option("-o", "--output", "output", default=None, help="Output video file (default out.mp4).")
@click.option(
    "--emit-job",
    "emit_job",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a JobSpec here instead of rendering.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks to plan with --emit-job (default: CPU count).",
)
@click.option(
    "--chunk-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Plan chunks of this many frames instead of an even split.",
)
@click.option("--duration", type=float, default=None, help="Seconds to render.")
@click.option("--frame-count", type=int, default=None, help="Frames to render (instead of --duration).")
@click.option("--start-frame", type=click.IntRange(min=0), default=0, show_default=True, help="First frame (absolute).")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Width in pixels (default 1280).")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Height in pixels (default 720).")
@click.option("--fps", type=float, default=None, help="Frames per second (default 30).")
@click.option(
    "--capture",
    "--mode",
    "capture",
    type=click.Choice(CAPTURE_CHOICES),
    default=None,
    help="How frames are captured (Helios: --mode). Default auto.",
)
@click.option("--video-codec", default="libx264", show_default=True, callback=_codec_name_flag)
@click.option("--audio-codec", default="aac", show_default=True, callback=_codec_name_flag)
@click.option("--pixel-format", default="yuv420p", show_default=True, callback=_codec_name_flag)
@click.option(
    "--crf",
    "--quality",
    "crf",
    type=click.IntRange(0, 63),
    default=18,
    show_default=True,
    help="Constant rate factor (Helios: --quality).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help='Seed of Math.random and crypto in the page (default: the meta tag\'s "seed", else 0).',
)
@click.option(
    "--props",
    default=None,
    metavar="JSON",
    callback=_props_flag,
    help="Input props, a JSON object: window.helios.props and window.__HELIOS_PROPS__ in the page (over the "
    'meta tag\'s "props").',
)
@click.option("--props-file", default=None, metavar="FILE", callback=_props_flag, help="Input props from a JSON file.")
@click.option("--no-audio", is_flag=True, help="Leave audio out (chunk renders: audio is mixed once at the merge).")
@click.option(
    "--parts",
    type=click.IntRange(min=0),
    default=0,
    help="Render in N browsers at once, each capturing the next frame not yet taken, into one encoder "
    "(default 0: one per core when the render is long enough to pay for the extra browser).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def render_command(
    input_ref: str,
    output: str | None,
    emit_job: str | None,
    concurrency: int | None,
    chunk_frames: int | None,
    duration: float | None,
    frame_count: int | None,
    start_frame: int,
    width: int | None,
    height: int | None,
    fps: float | None,
    capture: str | None,
    video_codec: str,
    audio_codec: str,
    pixel_format: str,
    crf: int,
    seed: int | None,
    props: dict[str, Any] | None,
    props_file: dict[str, Any] | None,
    no_audio: bool,
    parts: int,
    quiet: bool,
) -> None:
    """Render INPUT (an HTML file, a folder with index.html, or an http(s) URL) to a video file.

    With --emit-job, plan a JobSpec (chunks + merge) for `helios job run` instead of rendering.
    """
    composition = resolve_input(input_ref)
    meta = composition.meta
    page = _page_settings(composition, width, height, fps, duration if frame_count is None else 0.0)
    fps = fps if fps is not None else meta.fps or page.fps or 30.0
    if not math.isfinite(fps) or fps <= 0:
        raise click.BadParameter(f"must be > 0, got {fps:g}", param_hint="--fps")
    frames = frame_count_from(duration, frame_count, fps, meta.duration or page.duration)
    settings = dict(
        width=width or meta.width or page.width or 1280,
        height=height or meta.height or page.height or 720,
        fps=fps,
        start_frame=start_frame,
        frame_count=frames,
        capture=capture or "auto",
        video_codec=video_codec,
        audio_codec=audio_codec,
        pixel_format=pixel_format,
        crf=crf,
        seed=seed if seed is not None else meta.seed or 0,
        props=_props(meta.props, props, props_file),
    )
    if emit_job:
        _emit_job(composition, emit_job, output, concurrency, chunk_frames, settings)
    else:
        _render(composition, output or "out.mp4", settings, with_audio=not no_audio, parts=parts, quiet=quiet)


def _props(declared: dict[str, Any] | None, given: dict[str, Any] | None, from_file: dict[str, Any] | None) -> dict:
    """The meta tag's props, overridden key by key by --props (or --props-file, not both)."""
    if given is not None and from_file is not None:
        raise SpecError("--props and --props-file: give one of them")
    return {**(declared or {}), **(given if given is not None else from_file or {})}


def _page_settings(
    composition: CompositionInput,
    width: int | None,
    height: int | None,
    fps: float | None,
    duration: float | None,
) -> PageSettings:
    """What the page's Helios instance declares, read only when a setting is given neither by a flag nor by
    the meta tag (it costs one page load); empty when the page has no such instance."""
    from helios_kit.render.probe import PageSettings, page_settings

    meta = composition.meta
    missing = [
        given is None and declared is None
        for given, declared in ((width, meta.width), (height, meta.height), (fps, meta.fps), (duration, meta.duration))
    ]
    if not any(missing):
        return PageSettings()
    return page_settings(composition.location) or PageSettings()


def _emit_job(
    composition: CompositionInput,
    emit_job: str,
    output: str | None,
    concurrency: int | None,
    chunk_frames: int | None,
    settings: dict,
) -> None:
    from helios_kit.planner import plan_job
    from helios_kit.spec import dump

    job_path = Path(emit_job).resolve()
    job_dir = job_path.parent
    if composition.is_url:
        input_value = composition.location
    else:
        input_value = Path(os.path.relpath(composition.location, job_dir)).as_posix()
    output_value = _relative_to(job_dir, output or "out.mp4", "-o")
    config = RenderConfig(input=input_value, output=output_value, **settings)
    spec = plan_job(config, concurrency=concurrency or os.cpu_count() or 1, chunk_frames=chunk_frames)
    try:
        dump(spec, job_path)
    except OSError as error:
        raise HeliosError(f"cannot write job file {emit_job}: {error.strerror or error}") from None
    click.echo(
        f"wrote {emit_job}: job {spec.job_id}, {len(spec.chunks)} chunk{'s' if len(spec.chunks) != 1 else ''}, "
        f"{config.frame_count} frames ({config.duration_s:g} s at {config.fps:g} fps) → {config.output}"
    )


def _relative_to(job_dir: Path, path: str, flag: str) -> str:
    target = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    rel = Path(os.path.relpath(target.resolve(), job_dir)).as_posix()
    if rel.startswith("../") or rel == "..":
        raise click.BadParameter(f"{path} must be inside the job file's directory {job_dir}", param_hint=flag)
    return rel


def _render(
    composition: CompositionInput, output: str, settings: dict, *, with_audio: bool, parts: int, quiet: bool
) -> None:
    """A thin layer over :func:`helios_kit.api.render` with the settings worked out above."""
    from helios_kit import api

    output_path = Path(output).resolve()
    if not os.access(output_path.parent, os.W_OK) and output_path.parent.is_dir():
        raise HeliosError(f"output directory is not writable: {output_path.parent}")
    given = dict(settings)
    props = given.pop("props")
    start_frame = given.pop("start_frame")
    stats = api.render(
        composition.location,
        output_path,
        props=props,
        start_frame=start_frame,
        audio=with_audio,
        parts=parts,
        quiet=quiet,
        **given,
    )
    if not quiet:
        seconds = stats.duration_ms / 1000
        duration = given["frame_count"] / given["fps"]
        click.echo(
            f"rendered {stats.frames} frames ({duration:g} s) in {seconds:.1f} s "
            f"({stats.frames / max(seconds, 1e-9):.1f} frames/s, {stats.capture} capture) → {output}"
        )
