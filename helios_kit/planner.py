"""Planning: split a frame range into chunks and build the JobSpec with each chunk's command. Pure functions.

Durations become frame counts through :func:`frames_for_duration` (from :mod:`helios_kit.frames`, re-exported
here): `ceil(duration x fps)`, float-safe.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import PurePosixPath

from helios_kit.frames import frames_for_duration
from helios_kit.spec import Chunk, JobSpec, Merge, RenderConfig

__all__ = ["chunk_output_name", "frames_for_duration", "new_job_id", "plan_job", "split_frames"]

DEFAULT_CHUNK_DIR = "chunks"


def split_frames(
    start_frame: int,
    frame_count: int,
    *,
    concurrency: int | None = None,
    chunk_frames: int | None = None,
) -> list[tuple[int, int]]:
    """Split `[start_frame, start_frame + frame_count)` into `(start, count)` ranges, in order.

    With `chunk_frames`, ranges of that many frames (the last one may be shorter). Otherwise
    `min(concurrency, frame_count)` ranges whose sizes differ by at most one frame, the longer ones first
    (61 frames over 4 → 16, 15, 15, 15). Never an empty range.
    """
    if frame_count <= 0:
        raise ValueError(f"frame count must be > 0, got {frame_count}")
    if start_frame < 0:
        raise ValueError(f"start frame must be >= 0, got {start_frame}")
    if chunk_frames is not None:
        if chunk_frames <= 0:
            raise ValueError(f"chunk frames must be > 0, got {chunk_frames}")
        return [
            (start, min(chunk_frames, start_frame + frame_count - start))
            for start in range(start_frame, start_frame + frame_count, chunk_frames)
        ]
    parts = 1 if concurrency is None else concurrency
    if parts <= 0:
        raise ValueError(f"concurrency must be > 0, got {parts}")
    parts = min(parts, frame_count)
    base, extra = divmod(frame_count, parts)
    ranges: list[tuple[int, int]] = []
    start = start_frame
    for index in range(parts):
        count = base + (1 if index < extra else 0)
        ranges.append((start, count))
        start += count
    return ranges


def new_job_id(input_ref: str) -> str:
    """A readable, unique job id: a slug of the input's name plus a random suffix (e.g. `intro-3f9c2a`)."""
    path = PurePosixPath(input_ref.rstrip("/").split("?")[0])
    name = path.stem if path.stem not in ("index", "") else (path.parent.name or path.stem)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "job"
    return f"{slug}-{secrets.token_hex(3)}"


def chunk_output_name(chunk_id: int, chunk_count: int, output: str, chunk_dir: str = DEFAULT_CHUNK_DIR) -> str:
    """`chunks/chunk-0003.mp4`: zero-padded so names sort in order; the container follows the output's."""
    suffix = PurePosixPath(output).suffix or ".mp4"
    width = max(4, len(str(chunk_count - 1)))
    return f"{chunk_dir}/chunk-{chunk_id:0{width}d}{suffix}"


def render_command(config: RenderConfig, start_frame: int, frame_count: int, output_file: str) -> list[str]:
    """The argv that, run from the job's directory, renders exactly this frame range into `output_file`."""
    return [
        "helios",
        "render",
        config.input,
        "-o",
        output_file,
        "--start-frame",
        str(start_frame),
        "--frame-count",
        str(frame_count),
        "--width",
        str(config.width),
        "--height",
        str(config.height),
        "--fps",
        f"{config.fps:g}",
        "--capture",
        config.capture.value,
        "--video-codec",
        config.video_codec,
        "--audio-codec",
        config.audio_codec,
        "--pixel-format",
        config.pixel_format,
        "--crf",
        str(config.crf),
        "--seed",
        str(config.seed),
        *(["--props", json.dumps(config.props, sort_keys=True, separators=(",", ":"))] if config.props else []),
        "--no-audio",
        "--parts",
        "1",
    ]


def merge_command(output_file: str, inputs: list[str], composition: str | None = None) -> list[str]:
    """The argv that joins the chunk files (stream copy) into the job's output, mixing audio once."""
    argv = ["helios", "merge", output_file, *inputs]
    if composition is not None:
        argv += ["--audio-from", composition]
    return argv


def plan_job(
    config: RenderConfig,
    *,
    concurrency: int | None = None,
    chunk_frames: int | None = None,
    job_id: str | None = None,
    chunk_dir: str = DEFAULT_CHUNK_DIR,
) -> JobSpec:
    """Plan a JobSpec for `config`: chunks (even split or fixed size), their commands, and the merge."""
    ranges = split_frames(config.start_frame, config.frame_count, concurrency=concurrency, chunk_frames=chunk_frames)
    chunks = []
    for index, (start, count) in enumerate(ranges):
        output_file = chunk_output_name(index, len(ranges), config.output, chunk_dir)
        chunks.append(
            Chunk(
                id=index,
                start_frame=start,
                frame_count=count,
                output_file=output_file,
                command=render_command(config, start, count, output_file),
            )
        )
    outputs = [chunk.output_file for chunk in chunks]
    return JobSpec(
        job_id=job_id or new_job_id(config.input),
        config=config,
        chunks=chunks,
        merge=Merge(
            output_file=config.output,
            inputs=outputs,
            command=merge_command(config.output, outputs, config.input),
        ),
    )
