"""Planning a batch: one JobSpec per row (config.props = the template's meta props overridden by the row),
long videos chunked like jobs, each written as a job file only when its plan changed.

Layout under the batch's root (the output template's fixed folder, `out/` for `out/{id}.mp4`), which is
also the artifact store: the videos at their template paths, and under `.helios/batch/` the job files
(`jobs/<jobId>.json`), the chunks (`chunks/<jobId>/chunk-0000.mp4` + done-manifests) and doit's cache.
A video's job id comes from its output path, so an unchanged row keeps its chunks and its video.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from helios_kit.batching.rows import Row, asset_props, outputs_for, split_template
from helios_kit.composition import CompositionInput, resolve_input
from helios_kit.errors import HeliosError, SpecError
from helios_kit.frames import frames_for_duration
from helios_kit.planner import plan_job
from helios_kit.spec import CaptureMode, JobSpec, RenderConfig, format_validation_error

BATCH_DIR = ".helios/batch"
#: Frames per chunk of a batch video: a video longer than this is split into chunks rendered in parallel.
DEFAULT_CHUNK_FRAMES = 300
#: The index `--emit-batch DIR` writes beside the job files.
INDEX_FILE = "batch.json"


class BatchSettings(BaseModel):
    """Render settings shared by every video (flags of `helios batch`); None means the template's meta tag,
    else the defaults of `helios render`."""

    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fps: float | None = Field(None, gt=0)
    duration: float | None = Field(None, gt=0)
    frame_count: int | None = Field(None, gt=0)
    capture: CaptureMode = CaptureMode.AUTO
    video_codec: str = "libx264"
    audio_codec: str = "aac"
    pixel_format: str = "yuv420p"
    crf: int = Field(18, ge=0, le=63)
    seed: int | None = Field(None, ge=0)
    chunk_frames: int = Field(DEFAULT_CHUNK_FRAMES, gt=0)


class BatchVideo(BaseModel):
    """One row's video: where it goes, its job (file and spec), or why it could not be planned."""

    index: int
    label: str
    output: str = Field(description="Path relative to the batch root.")
    job_id: str = ""
    job_file: str = ""
    spec: JobSpec | None = None
    error: str | None = None

    @property
    def frames(self) -> int:
        return self.spec.config.frame_count if self.spec else 0


class BatchPlan(BaseModel):
    """Every video of a batch, planned."""

    root: Path
    jobs_dir: Path
    template: str
    rows_source: str
    videos: list[BatchVideo]
    written: int = Field(0, description="Job files (re)written when planning with `write`.")

    @property
    def planned(self) -> list[BatchVideo]:
        return [video for video in self.videos if video.spec is not None]


def job_id_for(output: str) -> str:
    """A stable, readable job id for a video: its name plus a hash of its path (`ada-1f3a9c2e`)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(output).stem).strip("-").lower()[:40] or "video"
    return f"{stem}-{hashlib.sha256(output.encode()).hexdigest()[:8]}"


def base_config(composition: CompositionInput, settings: BatchSettings) -> dict:
    """The settings every video shares: flags over the template's meta tag over the defaults."""
    meta = composition.meta
    fps = settings.fps or meta.fps or 30.0
    if settings.frame_count is not None:
        frames = settings.frame_count
    elif settings.duration or meta.duration:
        frames = frames_for_duration(settings.duration or meta.duration or 0.0, fps)
    else:
        raise SpecError("how long? give --duration SECONDS or --frame-count N (or a helios meta tag in the template)")
    return dict(
        width=settings.width or meta.width or 1280,
        height=settings.height or meta.height or 720,
        fps=fps,
        frame_count=frames,
        capture=settings.capture,
        video_codec=settings.video_codec,
        audio_codec=settings.audio_codec,
        pixel_format=settings.pixel_format,
        crf=settings.crf,
        seed=settings.seed if settings.seed is not None else meta.seed or 0,
    )


def plan_batch(
    template: str,
    rows: list[Row],
    output: str,
    settings: BatchSettings | None = None,
    *,
    rows_source: str = "rows",
    rows_dir: Path | None = None,
    write: bool = False,
    emit_dir: Path | None = None,
) -> BatchPlan:
    """Plan one JobSpec per row; with `write`, write each job file whose plan changed (a run writes a
    video's job file only when one of its chunks has to render: workers load it, nothing else does).

    User errors about the whole batch (template, output template, two rows → one output) raise SpecError;
    a row that cannot be planned (an invalid prop, an asset too big) becomes that video's `error`.
    With `emit_dir`, that folder is the root and holds the job files (`helios job run DIR/<jobId>.json`)."""
    settings = settings or BatchSettings()
    composition = resolve_input(template)
    base = base_config(composition, settings)
    if emit_dir is not None:
        if Path(output).is_absolute() or ".." in Path(output).parts:
            raise SpecError(f"-o {output!r}: with --emit-batch the output template must be relative to that folder")
        root, rel_template = emit_dir.resolve(), output
        jobs_dir = root
    else:
        folder, rel_template = split_template(output)
        root = Path(folder).expanduser().resolve()
        jobs_dir = root / BATCH_DIR / "jobs"
    outputs = outputs_for(rel_template, rows, rows_source)
    entry = composition.location if composition.is_url else Path(os.path.relpath(composition.location, jobs_dir))
    input_value = entry if isinstance(entry, str) else entry.as_posix()
    plan = BatchPlan(root=root, jobs_dir=jobs_dir, template=composition.location, rows_source=rows_source, videos=[])
    declared = composition.meta.props or {}
    rows_dir = rows_dir or Path.cwd()
    for row, rel in zip(rows, outputs, strict=True):
        video = BatchVideo(index=row.index, label=row.label(rows_source), output=rel, job_id=job_id_for(rel))
        video.job_file = str(jobs_dir / f"{video.job_id}.json")
        try:
            props = asset_props(row.props, rows_dir, video.label)
            config = RenderConfig(input=input_value, output=rel, props={**declared, **props}, **base)
            video.spec = plan_job(
                config,
                chunk_frames=settings.chunk_frames,
                job_id=video.job_id,
                chunk_dir=f"{BATCH_DIR}/chunks/{video.job_id}",
            )
        except ValidationError as error:
            video.error = f"{video.label}: {format_validation_error(error)}"
        except HeliosError as error:
            video.error = str(error) if video.label in str(error) else f"{video.label}: {error}"
        plan.videos.append(video)
    if write:
        plan.written = write_job_files(plan)
    return plan


def write_job_file(video: BatchVideo) -> bool:
    """Write a planned video's job file (stable JSON, atomically) unless it already holds the same plan;
    True when it was (re)written."""
    assert video.spec is not None
    path = Path(video.job_file)
    text = video.spec.model_dump_json(by_alias=True, indent=1) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        raise HeliosError(f"cannot write job file {path}: {error.strerror or error}") from None
    return True


def write_job_files(plan: BatchPlan) -> int:
    """Write every planned video's job file that changed; returns how many were written."""
    return sum(write_job_file(video) for video in plan.planned)


class IndexEntry(BaseModel):
    """One row of the index: its output and job file, or why it was not planned."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    index: int
    label: str
    output: str
    job_id: str | None = None
    job_file: str | None = None
    error: str | None = None


class BatchIndex(BaseModel):
    """`batch.json` of `--emit-batch DIR`: which job file renders which row (and the rows that failed to plan)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    template: str
    rows: str
    jobs: list[IndexEntry]


def write_index(plan: BatchPlan) -> Path:
    """Write `batch.json` (camelCase) beside the emitted job files, atomically; returns its path."""
    entries = [
        IndexEntry(
            index=video.index,
            label=video.label,
            output=video.output,
            job_id=video.job_id if video.spec else None,
            job_file=Path(video.job_file).name if video.spec else None,
            error=video.error,
        )
        for video in plan.videos
    ]
    index = BatchIndex(template=plan.template, rows=plan.rows_source, jobs=entries)
    path = plan.jobs_dir / INDEX_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(index.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
