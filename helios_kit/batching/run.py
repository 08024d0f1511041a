"""Running a batch: ONE doit DAG over every video's chunks and merges, then a report per video.

Each planned video is a :class:`~helios_kit.run.JobRun` (its context, its executor, its doit tasks under the
basename `video-<jobId>`), all sharing one backend, one cancel event and one doit run (`--continue`: a
failing row never stops the others). The artifact store (the batch root) is the only truth about what is
done, so a batch killed with -9 resumes with what is missing, an unchanged video is neither rendered nor
rewritten, and a changed row re-renders only its own video.

Straggler backups (:mod:`helios_kit.stragglers`, on for remote backends by default, as for a job run) are the
batch's: one :class:`~helios_kit.stragglers.Backups` shared by every video's executor, so who straggles is
judged against the median chunk of the whole batch (rows of one template render alike; a video alone has too
few chunks for a median).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from helios_kit.backends.base import Backend
from helios_kit.batching.plan import BATCH_DIR, BatchPlan, BatchVideo, write_job_file
from helios_kit.context import JobContext
from helios_kit.dag import run_tasks
from helios_kit.executor import ChunkExecutor
from helios_kit.protocol import ProgressEvent
from helios_kit.run import JobReport, JobRun, RunOptions
from helios_kit.spec import Chunk
from helios_kit.stragglers import Backups


class BatchEvent(BaseModel):
    """A progress event of one video of the batch."""

    index: int
    output: str
    event: ProgressEvent


BatchSink = Callable[[BatchEvent], None]


class VideoState(StrEnum):
    RENDERED = "rendered"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class VideoOutcome(BaseModel):
    """How one row's video ended."""

    index: int
    label: str
    output: str
    state: VideoState
    frames: int = 0
    rendered_chunks: int = 0
    error: str | None = None


class BatchReport(BaseModel):
    """Everything a batch run did; `summary_line()` is the CLI's last line."""

    videos: list[VideoOutcome] = Field(default_factory=list)
    cancelled: bool = False
    error: str | None = None
    duration_ms: float = 0.0
    backups_failed: int = Field(0, description="Straggler backup attempts that failed (no retries: counted apart).")

    def count(self, state: VideoState) -> int:
        return sum(1 for video in self.videos if video.state is state)

    @property
    def failed(self) -> list[VideoOutcome]:
        return [video for video in self.videos if video.state is VideoState.FAILED]

    @property
    def ok(self) -> bool:
        return (
            not self.cancelled
            and self.error is None
            and all(video.state in (VideoState.RENDERED, VideoState.SKIPPED) for video in self.videos)
        )

    def summary_line(self) -> str:
        line = (
            f"{len(self.videos)} videos: {self.count(VideoState.RENDERED)} rendered, "
            f"{self.count(VideoState.SKIPPED)} skipped (up to date), {self.count(VideoState.FAILED)} failed"
        )
        if self.cancelled or self.count(VideoState.CANCELLED):
            line += f", {self.count(VideoState.CANCELLED)} cancelled"
        line += f" in {self.duration_ms / 1000:.1f} s"
        if self.error:
            line += f"; error: {self.error}"
        if self.backups_failed:
            line += f"; {self.backups_failed} failed backup attempt{'' if self.backups_failed == 1 else 's'}"
        return line


class _VideoSink:
    """Tags a video's executor events with the video and hands them to the batch's sinks."""

    def __init__(self, video: BatchVideo, sinks: list[BatchSink]) -> None:
        self.video = video
        self.sinks = sinks

    def __call__(self, event: ProgressEvent) -> None:
        tagged = BatchEvent(index=self.video.index, output=self.video.output, event=event)
        for sink in self.sinks:
            sink(tagged)


class _VideoRun(JobRun):
    """A video's JobRun whose job file is written (when its plan changed) before its first chunk renders:
    workers load it, and a batch with nothing to render writes nothing."""

    def __init__(self, video: BatchVideo, ctx: JobContext, executor: ChunkExecutor) -> None:
        super().__init__(ctx, executor)
        self.video = video
        self._written = False
        self._lock = threading.Lock()

    def render_chunk(self, chunk: Chunk) -> bool:
        with self._lock:
            if not self._written:
                write_job_file(self.video)
                self._written = True
        return super().render_chunk(chunk)


class BatchRun:
    """The runs of every planned video of a batch, and the one DAG over them."""

    def __init__(
        self,
        plan: BatchPlan,
        backend: Backend,
        options: RunOptions | None = None,
        *,
        cancel: threading.Event | None = None,
        sinks: Iterable[BatchSink] = (),
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.options = options or RunOptions()
        self.cancel = cancel or threading.Event()
        self.concurrency = self.options.concurrency or backend.default_concurrency()
        # every executor may use all slots: doit's runner (-n) is what limits the whole batch
        attempt = self.options.model_copy(update={"concurrency": self.concurrency})
        sinks = list(sinks)
        self.runs: list[tuple[BatchVideo, JobRun]] = []
        first: JobContext | None = None
        for video in plan.planned:
            assert video.spec is not None
            ctx = self._context(video, first, attempt.force)
            first = first or ctx
            executor = ChunkExecutor(
                backend, video.spec, ctx.chunk_context(), attempt, cancel=self.cancel, sinks=[_VideoSink(video, sinks)]
            )
            self.runs.append((video, _VideoRun(video, ctx, executor)))

    def _context(self, video: BatchVideo, first: JobContext | None, force: bool) -> JobContext:
        """The video's JobContext. Every video has the same entry and job dir, so the first one resolves the
        composition and the store; the others share them and one dependency checker (each file hashed once)."""
        assert video.spec is not None
        if first is None or first.workspace is not None:  # a downloaded composition: each video its own copy
            return JobContext.prepare(
                video.spec, video.job_file, self.plan.jobs_dir, store_url=str(self.plan.root), force=force
            )
        return JobContext(
            spec=video.spec,
            job_url=video.job_file,
            job_dir=self.plan.jobs_dir,
            store=first.store,
            composition=first.composition,
            force=force,
            _checker=first.checker,
        )

    def tasks(self) -> Iterator[dict[str, Any]]:
        """Every video's chunk and merge tasks, and `render` depending on every merge."""
        merges = []
        for video, run in self.runs:
            basename = f"video-{video.job_id}"
            yield from run.tasks(basename=basename)
            merges.append(f"{basename}:merge")
        yield {"basename": "render", "actions": None, "task_dep": merges, "verbosity": 2}

    def check_store(self) -> None:
        """Outputs confined to the root and the root writable (before anything renders); sweep temporaries
        of commits a killed run left behind."""
        if not self.runs:
            return
        store = self.runs[0][1].ctx.store
        paths = [path for _, run in self.runs for path in (*run.ctx.spec.merge.inputs, run.ctx.spec.merge.output_file)]
        store.check_confined(paths)
        store.check_writable()
        store.sweep_temporaries(paths)

    def enable_backups(self) -> Backups | None:
        """Straggler backups when the options say so for this backend: one instance over every video's
        chunks (the batch's median; races keyed by job and chunk), None when off."""
        policy = self.options.backups
        if not self.runs or not policy.active_for(self.backend.backups_by_default):
            return None
        total = sum(len(run.ctx.spec.chunks) for _, run in self.runs)
        backups = Backups(policy, total, name_jobs=True)
        for _, run in self.runs:
            run.executor.share_backups(backups)
        return backups

    def run(self) -> BatchReport:
        started = time.monotonic()
        error = None
        backups = None
        if self.runs:
            self.check_store()
            db_file = _usable_db(self.plan.root / BATCH_DIR / "batch.doit.db")
            task_count = sum(len(run.ctx.spec.chunks) + 1 for _, run in self.runs)
            backups = self.enable_backups()
            try:
                error = run_tasks(self.tasks, db_file=db_file, concurrency=self.concurrency, task_count=task_count)
            finally:
                if backups is not None:
                    backups.close()
        report = BatchReport(
            cancelled=self.cancel.is_set(), error=error, backups_failed=backups.failed if backups is not None else 0
        )
        outcomes = {video.index: _outcome(video, run.report(error, 0.0)) for video, run in self.runs}
        for video in self.plan.videos:
            outcome = outcomes.get(video.index)
            if outcome is None:  # not planned: its error says why
                outcome = VideoOutcome(
                    index=video.index,
                    label=video.label,
                    output=video.output,
                    state=VideoState.FAILED,
                    error=video.error,
                )
            report.videos.append(outcome)
        report.duration_ms = (time.monotonic() - started) * 1000
        return report

    def close(self) -> None:
        for _, run in self.runs:
            run.ctx.close()  # only a context that downloaded its composition holds a workspace


def _usable_db(db_file: Path) -> Path:
    """doit's cache, removed when a killed run left it truncated (doit writes it in place at the end): it is
    only a cache, the store says what is done, and doit refuses to start on a file it cannot parse."""
    try:
        json.loads(db_file.read_bytes())
    except FileNotFoundError:
        pass
    except (ValueError, OSError):
        db_file.unlink(missing_ok=True)
    return db_file


def _outcome(video: BatchVideo, report: JobReport) -> VideoOutcome:
    """A video's outcome from its job's report."""
    outcome = VideoOutcome(
        index=video.index,
        label=video.label,
        output=video.output,
        state=VideoState.FAILED,
        frames=video.frames,
        rendered_chunks=report.rendered,
    )
    merge = report.merge
    if report.ok and merge is not None and merge.output is not None:
        skipped = merge.skipped and report.rendered == 0
        outcome.state = VideoState.SKIPPED if skipped else VideoState.RENDERED
        return outcome
    if report.cancelled:
        outcome.state = VideoState.CANCELLED
        return outcome
    errors = [chunk.error for chunk in report.chunks if chunk.error and chunk.state.value == "failed"]
    why = errors[0] if errors else (merge.error if merge and merge.error else report.error or "not rendered")
    outcome.error = f"{video.label}: {why}"
    return outcome


def batch_run_options(given: dict[str, Any]) -> RunOptions:
    """`helios job run`'s options that make sense for a batch (SpecError for chunks, store and merge)."""
    from helios_kit.errors import SpecError

    for key in ("chunks", "store", "merge"):
        if key in given:
            raise SpecError(f"{key}: not a batch setting (a batch renders and merges every video in its root)")
    return RunOptions(**given)


def run_batch(
    plan: BatchPlan,
    backend: Backend,
    options: RunOptions | None = None,
    *,
    cancel: threading.Event | None = None,
    sinks: Iterable[BatchSink] = (),
) -> BatchReport:
    """Render every planned video that is not complete (one DAG), merge each, and report per video."""
    batch = BatchRun(plan, backend, options, cancel=cancel, sinks=sinks)
    try:
        return batch.run()
    finally:
        batch.close()


def batch_tasks(
    template: str | Path,
    rows: str | Path,
    output: str,
    *,
    backend: str = "local",
    retries: int = 1,
    **settings: Any,
) -> Iterator[dict[str, Any]]:
    """Tasks for a project's dodo.py rendering a batch incrementally: ``def task_render(): yield from
    batch_tasks("card", "rows.csv", "out/{id}.mp4")``. Concurrency is doit's ``-n``."""
    from helios_kit.batching.plan import BatchSettings, plan_batch
    from helios_kit.batching.rows import read_rows
    from helios_kit.plugins import make_backend

    rows_path = Path(rows)
    plan = plan_batch(
        str(template),
        read_rows(rows_path),
        output,
        BatchSettings(**settings),
        rows_source=str(rows_path),
        rows_dir=rows_path.resolve().parent,
    )
    for video in plan.videos:
        if video.error:
            print(f"error: {video.error}", flush=True)
    chunks = sum(len(video.spec.chunks) for video in plan.planned if video.spec)
    options = RunOptions(concurrency=max(1, chunks), retries=retries)
    yield from BatchRun(plan, make_backend(backend), options).tasks()
