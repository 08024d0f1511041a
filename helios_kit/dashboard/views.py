"""What the dashboard shows, as pydantic models built from run records (no I/O here).

A run's summary (state, progress, frames/s, ETA, cost so far) and its detail (the chunk grid: each chunk's
grid state, attempts, worker, duration, error and log tail, thumbnail link; the preview link). The JSON is
what `GET /api/jobs`, `GET /api/runs/<id>` and the server-sent events carry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import Field

from helios_kit.protocol import ChunkState
from helios_kit.repository import ChunkStatus, JobState, JobStatus, StatusModel, utcnow

GridState = Literal["pending", "leased", "running", "retrying", "done", "failed", "cancelled"]


class ChunkView(StatusModel):
    id: int
    state: GridState
    attempts: int = 0
    worker: str | None = None
    duration_ms: float = 0.0
    frames: int = 0
    error: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    thumbnail: str | None = Field(None, description="URL of a still of the finished chunk.")


class RunSummary(StatusModel):
    run_id: str
    job_id: str
    state: JobState
    progress: float
    completed_chunks: int
    total_chunks: int
    total_frames: int
    done_frames: int
    fps: float | None = Field(None, description="Frames rendered per second of this run.")
    eta_seconds: float | None = None
    cost_usd: float | None = None
    backend: str
    output: str
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunDetail(RunSummary):
    chunks: list[ChunkView]
    preview: str | None = Field(None, description="URL of the merged output (HTTP ranges).")
    warnings: list[str] = Field(default_factory=list)
    cancel_requested: bool = False


class JobView(StatusModel):
    job_id: str
    runs: list[RunSummary]


class JobsView(StatusModel):
    jobs: list[JobView]


def _fps(status: JobStatus, now: datetime) -> float | None:
    if not status.started_at or not status.rendered_frames:
        return None
    elapsed = ((status.finished_at or now) - status.started_at).total_seconds()
    return round(status.rendered_frames / elapsed, 2) if elapsed > 0 else None


def summarize(status: JobStatus, now: datetime | None = None) -> RunSummary:
    now = now or utcnow()
    fps = _fps(status, now)
    left = max(0, status.total_frames - status.done_frames)
    eta = round(left / fps, 1) if fps and status.state.active else None
    return RunSummary(
        run_id=status.run_id,
        job_id=status.id,
        state=status.state,
        progress=status.progress,
        completed_chunks=status.completed_chunks,
        total_chunks=status.total_chunks,
        total_frames=status.total_frames,
        done_frames=status.done_frames,
        fps=fps,
        eta_seconds=eta,
        cost_usd=status.cost_usd,
        backend=status.backend,
        output=status.result.output if status.result else status.output,
        error=status.error,
        created_at=status.created_at,
        started_at=status.started_at,
        finished_at=status.finished_at,
    )


def grid_state(chunk: ChunkStatus, leased: bool = False) -> GridState:
    if chunk.state is ChunkState.RUNNING:
        return "retrying" if chunk.retrying else "running"
    if chunk.state.done:
        return "done"
    if chunk.state is ChunkState.FAILED:
        return "failed"
    if chunk.state is ChunkState.CANCELLED:
        return "cancelled"
    return "leased" if leased else "pending"


def detail(
    status: JobStatus,
    *,
    cancel_requested: bool = False,
    leased: Callable[[ChunkStatus], bool] = lambda chunk: False,
    now: datetime | None = None,
) -> RunDetail:
    """The run page's data; `leased(chunk)` says whether a pending chunk's lease is held in the store."""
    base = f"/runs/{status.run_id}"
    chunks = []
    for chunk in status.chunks:
        state = grid_state(chunk, chunk.state is ChunkState.PENDING and status.state.active and leased(chunk))
        chunks.append(
            ChunkView(
                id=chunk.id,
                state=state,
                attempts=chunk.attempts,
                worker=chunk.worker,
                duration_ms=chunk.duration_ms,
                frames=chunk.frames,
                error=chunk.error,
                log_tail=chunk.log_tail,
                thumbnail=f"{base}/chunks/{chunk.id}/thumb.jpg" if state == "done" and chunk.output_file else None,
            )
        )
    preview = f"{base}/preview.mp4" if status.state is JobState.COMPLETED and status.result else None
    summary = summarize(status, now).model_dump()
    return RunDetail(
        **summary, chunks=chunks, preview=preview, warnings=status.warnings, cancel_requested=cancel_requested
    )


def jobs_view(runs: list[JobStatus], now: datetime | None = None) -> JobsView:
    """Runs grouped by job, newest job (by its newest run) first, each job's runs newest first."""
    grouped: dict[str, list[RunSummary]] = {}
    for run in runs:
        grouped.setdefault(run.id, []).append(summarize(run, now))
    return JobsView(jobs=[JobView(job_id=job_id, runs=summaries) for job_id, summaries in grouped.items()])
