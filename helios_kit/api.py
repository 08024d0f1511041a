"""The public Python API: render, plan, run a job and render a batch from a script, a notebook or a pipeline
(Airflow, Prefect) without shelling out. Re-exported from the package root (``helios_kit.render(...)``).

Every function is typed, takes a ``progress=`` callback and a ``cancel=`` token (a :class:`threading.Event`:
set it from another thread to stop cleanly), and raises :class:`helios_kit.errors.HeliosError` (one line)
for what a caller got wrong. Settings are keyword arguments validated by the same pydantic models the CLI
uses; an unknown one is an error naming it. Heavy modules load on first call, so ``import helios_kit`` is
cheap. The CLI's ``helios batch`` is a thin layer over :func:`batch`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helios_kit.batching.plan import BatchPlan
    from helios_kit.batching.run import BatchEvent, BatchReport
    from helios_kit.protocol import ProgressEvent
    from helios_kit.render.session import RenderStats
    from helios_kit.run import JobReport
    from helios_kit.spec import JobSpec

__all__ = ["batch", "emit_batch", "plan", "plan_rows", "render", "run_job"]

log = logging.getLogger("helios.api")

#: Rows as a file (JSONL, CSV, JSON array) or as objects already in memory.
Rows = str | Path | Iterable[Mapping[str, Any]]


def _split(kwargs: dict[str, Any], *models: type) -> list[dict[str, Any]]:
    """Route keyword settings to the models that declare them; SpecError naming an unknown one."""
    from helios_kit.errors import SpecError

    routed: list[dict[str, Any]] = [{} for _ in models]
    for key, value in kwargs.items():
        for target, model in zip(routed, models, strict=True):
            if key in model.model_fields:  # type: ignore[attr-defined]
                target[key] = value
                break
        else:
            known = sorted({name for model in models for name in model.model_fields})  # type: ignore[attr-defined]
            raise SpecError(f"unknown setting {key!r} (known: {', '.join(known)})")
    return routed


def render(
    composition: str | Path,
    output: str | Path = "out.mp4",
    *,
    props: Mapping[str, Any] | None = None,
    start_frame: int = 0,
    audio: bool = True,
    parts: int = 1,
    quiet: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    **settings: Any,
) -> RenderStats:
    """Render `composition` (an HTML file, a folder with index.html, or an http(s) URL) into `output`.

    `settings`: width, height, fps, duration or frame_count, capture, video_codec, audio_codec,
    pixel_format, crf, seed (else the template's meta tag, else 1280x720 at 30 fps). `props` go over the meta
    tag's. `parts` renders the range in N browsers at once, capturing interleaved frames (0: one per core
    when long enough to pay off); `progress(frames_done, frame_count)` is called as frames are encoded;
    `quiet=False` draws the terminal progress instead."""
    from helios_kit.batching.plan import BatchSettings, base_config
    from helios_kit.composition import resolve_input
    from helios_kit.errors import HeliosError
    from helios_kit.render.parallel import auto_parts, render_parallel
    from helios_kit.render.session import render_range
    from helios_kit.spec import RenderConfig

    (given,) = _split(settings, BatchSettings)
    entry = resolve_input(str(composition))
    base = base_config(entry, BatchSettings(**given))
    output_path = Path(output).expanduser().resolve()
    if not output_path.parent.is_dir():
        raise HeliosError(f"output directory does not exist: {output_path.parent}")
    config = RenderConfig(
        input=entry.location,
        output=output_path.name,
        start_frame=start_frame,
        props={**(entry.meta.props or {}), **(props or {})},
        **base,
    )
    where = dict(input_location=entry.location, start_frame=start_frame, frame_count=config.frame_count)
    parts = parts or auto_parts(config.frame_count, capture=config.capture.value)
    if parts <= 1:
        stats = render_range(config, **where, output_path=output_path, progress=progress, cancel=cancel, quiet=quiet)
    else:
        stats = render_parallel(
            config, **where, output_path=output_path, parts=parts, progress=progress, cancel=cancel, quiet=quiet
        )
    _warn_missing_files(stats)
    if audio:
        _mix_soundtrack(entry.location, config, stats, output_path, cancel)
    return stats


def _warn_missing_files(stats: RenderStats) -> None:
    """Name, once each, the files the page asked for that its folder lacks and the URLs it could not load."""
    from helios_kit.composition.deps import missing_files_warning
    from helios_kit.render.load_failures import failed_loads_warning

    for warning in (missing_files_warning(stats.dependencies), failed_loads_warning(stats.failed_loads)):
        if warning:
            log.warning(warning)


def _mix_soundtrack(
    location: str, config: Any, stats: RenderStats, output_path: Path, cancel: threading.Event | None
) -> None:
    """A whole render is its own merge: its soundtrack is mixed once over its timeline. The media of a page
    with scripts are those the render's own page showed (it stepped every frame from 0 to the end); only when
    that page could not say is the page stepped again, in a browser of its own."""
    from helios_kit.render.audio import soundtrack_of_render
    from helios_kit.stitch import stitch

    end = config.start_frame + config.frame_count
    soundtrack = soundtrack_of_render(
        location, stats.media, fps=config.fps, frame_count=end, props=config.props, seed=config.seed, cancel=cancel
    )
    if soundtrack.tracks:
        soundtrack = soundtrack.model_copy(update={"timeline_start_s": config.start_frame / config.fps})
        stitch([output_path], output_path, audio=soundtrack, expected_frames=config.frame_count)


def plan(
    composition: str | Path,
    *,
    output: str = "out.mp4",
    job_file: str | Path | None = None,
    chunks: int | None = None,
    chunk_frames: int | None = None,
    props: Mapping[str, Any] | None = None,
    **settings: Any,
) -> JobSpec:
    """Plan a JobSpec (chunks + merge) for `composition` without rendering; with `job_file`, also write it
    there (the composition's path and `output` then relative to its folder, as `helios render --emit-job`)."""
    import os

    from helios_kit.batching.plan import BatchSettings, base_config
    from helios_kit.composition import resolve_input
    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig, dump

    (given,) = _split(settings, BatchSettings)
    entry = resolve_input(str(composition))
    base = base_config(entry, BatchSettings(**given))
    input_value = entry.location
    if job_file is not None and not entry.is_url:
        input_value = Path(os.path.relpath(entry.location, Path(job_file).resolve().parent)).as_posix()
    config = RenderConfig(input=input_value, output=output, props={**(entry.meta.props or {}), **(props or {})}, **base)
    spec = plan_job(config, concurrency=chunks or os.cpu_count() or 1, chunk_frames=chunk_frames)
    if job_file is not None:
        dump(spec, job_file)
    return spec


def run_job(
    job: JobSpec | str | Path,
    *,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    job_dir: str | Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | None = None,
    **options: Any,
) -> JobReport:
    """Run a job (a JobSpec, or a job file path or URL) on `backend`: render the chunks that are not complete,
    then merge. `options` are `helios job run`'s (concurrency, retries, retry_delay, chunk_timeout, force,
    store, chunks, merge). A JobSpec object is written to `job_dir` (default: the current folder) as
    `<jobId>.json` first, since workers load their job from a URL."""
    from helios_kit.loaders import load_spec
    from helios_kit.plugins import make_backend
    from helios_kit.run import RunOptions, execute_job
    from helios_kit.spec import dump, dumps

    (given,) = _split(options, RunOptions)
    if isinstance(job, str | Path):
        source = str(Path(job).resolve()) if Path(job).exists() else str(job)
        spec, folder = load_spec(source)
    else:
        spec, folder = job, Path(job_dir or Path.cwd()).resolve()
        path = folder / f"{spec.job_id}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != dumps(spec):
            dump(spec, path)
        source = str(path)
    with make_backend(backend, dict(backend_options or {})) as runner:
        sinks = [progress] if progress is not None else []
        return execute_job(spec, source, folder, runner, RunOptions(**given), cancel=cancel, sinks=sinks)


def _rows(rows: Rows) -> tuple[list[Any], str, Path]:
    """Rows from a file or from objects; with the source named in messages and the folder assets resolve in."""
    from helios_kit.batching.rows import Row, read_rows
    from helios_kit.errors import SpecError

    if isinstance(rows, str | Path):
        path = Path(rows)
        return read_rows(path), str(rows), path.resolve().parent
    parsed = []
    for index, item in enumerate(rows):
        if not isinstance(item, Mapping):
            raise SpecError(f"rows[{index}]: must be a mapping of props, got {type(item).__name__}")
        parsed.append(Row(index=index, line=index + 1, props=dict(item)))
    if not parsed:
        raise SpecError("rows: no rows")
    return parsed, "rows", Path.cwd()


def plan_rows(
    template: str | Path, rows: Rows, output: str, *, emit_dir: Path | None = None, **settings: Any
) -> BatchPlan:
    """Plan a batch: one JobSpec per row (see :func:`batch`); with `emit_dir`, the job files written there."""
    from helios_kit.batching.plan import BatchSettings, plan_batch

    (given,) = _split(settings, BatchSettings)
    parsed, source, rows_dir = _rows(rows)
    return plan_batch(
        str(template),
        parsed,
        output,
        BatchSettings(**given),
        rows_source=source,
        rows_dir=rows_dir,
        emit_dir=emit_dir,
        write=emit_dir is not None,
    )


def batch(
    template: str | Path,
    rows: Rows,
    *,
    output: str,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    progress: Callable[[BatchEvent], None] | None = None,
    cancel: threading.Event | None = None,
    **settings: Any,
) -> BatchReport:
    """Render one video per row of `rows` from `template` into `output` (`out/{id}.mp4`, `{index}`), as one
    DAG over every video's chunks and merges; unchanged videos are skipped, a failing row does not stop the
    others (see the report). `settings`: render settings (width, height, fps, duration, frame_count, capture,
    codecs, crf, seed, chunk_frames) and run options (concurrency, retries, retry_delay, chunk_timeout, force,
    backups: a :class:`~helios_kit.stragglers.BackupPolicy`, straggler backups timed by the batch's median,
    opened by each video's own share done).
    `progress` receives each video's events."""
    from helios_kit.batching.plan import BatchSettings
    from helios_kit.batching.run import batch_run_options, run_batch
    from helios_kit.plugins import make_backend
    from helios_kit.run import RunOptions

    render_settings, run_options = _split(settings, BatchSettings, RunOptions)
    plan_ = plan_rows(template, rows, output, **render_settings)
    options = batch_run_options(run_options)
    with make_backend(backend, dict(backend_options or {})) as runner:
        sinks = [progress] if progress is not None else []
        return run_batch(plan_, runner, options, cancel=cancel, sinks=sinks)


def emit_batch(template: str | Path, rows: Rows, directory: str | Path, *, output: str, **settings: Any) -> Path:
    """Write one JobSpec per row into `directory` plus the index `batch.json`, for any backend or external
    runner (`helios job run DIR/<jobId>.json`); returns the index's path. Nothing renders."""
    from helios_kit.batching.plan import write_index

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return write_index(plan_rows(template, rows, output, emit_dir=folder, **settings))
