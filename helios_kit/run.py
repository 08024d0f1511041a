"""A job run: prepare the job's context, hand doit its chunk and merge actions, run them, merge, report.

This module sits above :mod:`helios_kit.dag` (which only builds and runs doit tasks) and
:mod:`helios_kit.executor` (which only runs attempts), and calls both; neither imports it.

* :func:`execute_job` is what `helios job run` (through the JobManager) does: prepare the
  :class:`~helios_kit.context.JobContext`, run the tasks with DoitMain, and return a :class:`JobReport`
  whose :meth:`JobReport.summary_line` is the CLI's last line.
* :class:`JobRun` is one run's state: the actions doit calls (a chunk is up to date when the store says
  so; rendering goes through the executor; the merge through :func:`merge_job`) and the merge's outcome.
* :func:`project_tasks` and :func:`plan_project` are for a project's ``dodo.py``:
  ``def task_render(): yield from project_tasks(plan_project(HERE, ...))``; ``doit render`` then renders
  incrementally, ``doit -n 2 render`` in parallel, ``doit clean render`` removes the outputs and manifests,
  ``doit forget`` only drops doit's cache.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from helios_kit import seams
from helios_kit.backends.base import Backend
from helios_kit.cancel_marker import MarkerOnCancel, clear_marker
from helios_kit.composition import is_local, local_path
from helios_kit.context import STATE_DIR, JobContext
from helios_kit.cooperate import CooperativeChunks
from helios_kit.dag import TaskActions, job_tasks, run_tasks
from helios_kit.errors import HeliosError
from helios_kit.executor import AttemptOptions, ChunkExecutor, ChunkOutcome
from helios_kit.leases import LeaseStore
from helios_kit.merging import MergeWhere, choose_merge, merge_into_store, merge_remotely
from helios_kit.protocol import ChunkState, EventKind, EventSink, ProgressEvent
from helios_kit.spec import Chunk, JobSpec, id_ranges
from helios_kit.stragglers import BackupPolicy

log = logging.getLogger("helios.run")


class RunOptions(AttemptOptions):
    """How a job runs (the backend-independent flags of `helios job run`): the executor's attempt options,
    and which chunks, where to, whether to force and to merge."""

    force: bool = False
    chunks: list[int] | None = Field(None, description="Only these chunk ids (default: all).")
    store: str | None = None
    merge: bool = Field(True, description="Merge when every chunk is complete (False: render chunks only).")
    verify_seams: bool = Field(False, description="Check every chunk boundary before the merge (seams.py).")
    merge_where: MergeWhere = Field(MergeWhere.AUTO, description="Merge here, on the backend, or auto.")
    leases: bool = Field(True, description="Lease chunks in the store so runners sharing it split the job.")
    lease_ttl: float | None = Field(None, gt=0, description="Seconds a lease lasts unless renewed.")
    backups: BackupPolicy = Field(default_factory=BackupPolicy, description="Straggler backups.")


class MergeOutcome(BaseModel):
    output: str | None = None
    frames: int = 0
    duration_s: float = 0.0
    skipped: bool = False
    error: str | None = None
    pending: str | None = Field(None, description="Why the merge did not run (chunks left to render).")

    @property
    def ok(self) -> bool:
        return self.error is None


class JobReport(BaseModel):
    """Everything one run did; `summary_line()` is the CLI's last line."""

    job_id: str
    total_chunks: int
    chunks: list[ChunkOutcome] = Field(default_factory=list)
    merge: MergeOutcome | None = None
    cancelled: bool = False
    error: str | None = None
    duration_ms: float = 0.0
    merge_requested: bool = True
    backups_failed: int = Field(0, description="Straggler backup attempts that failed (no retries: counted apart).")

    def count(self, *states: ChunkState) -> int:
        return sum(1 for outcome in self.chunks if outcome.state in states)

    @property
    def rendered(self) -> int:
        return self.count(ChunkState.RENDERED)

    @property
    def skipped(self) -> int:
        return self.count(ChunkState.SKIPPED)

    @property
    def failed(self) -> int:
        return self.count(ChunkState.FAILED)

    @property
    def ok(self) -> bool:
        return not self.cancelled and self.error is None and self.failed == 0 and (self.merge is None or self.merge.ok)

    def summary_line(self) -> str:
        line = (
            f"{self.total_chunks} chunks: {self.rendered} rendered, {self.skipped} skipped (complete), "
            f"{self.failed} failed"
        )
        cancelled = self.count(ChunkState.CANCELLED)
        if self.cancelled or cancelled:
            line += f", {cancelled} cancelled"
        merge = self.merge
        if self.cancelled:
            line += "; job cancelled"
        elif merge is None and not self.merge_requested:
            line += "; not merged (--no-merge)"
        elif merge is None or merge.pending:
            why = merge.pending if merge and merge.pending else ("chunks failed" if self.failed else "not run")
            line += f"; not merged ({why})"
        elif merge.error:
            line += f"; merge failed: {merge.error}"
        else:
            note = ", up to date" if merge.skipped else ""
            line += f"; merged → {merge.output} ({merge.frames} frames, {merge.duration_s:.3f} s{note})"
        if self.error and not self.cancelled:
            line += f"; error: {self.error}"
        retries = sum(max(0, outcome.attempts - 1) for outcome in self.chunks)
        throttles = sum(outcome.throttles for outcome in self.chunks)
        if retries or throttles or self.backups_failed:
            line += f"; {retries} retr{'y' if retries == 1 else 'ies'}, {throttles} throttled"
        if self.backups_failed:
            line += f", {self.backups_failed} failed backup attempt{'' if self.backups_failed == 1 else 's'}"
        return line


def merge_job(ctx: JobContext, *, cancel: threading.Event | None = None) -> MergeOutcome:
    """Join the complete chunks into the job's output here (see :func:`helios_kit.merging.merge_into_store`).
    Raises HeliosError on failure."""
    merged = merge_into_store(ctx, cancel=cancel)
    return MergeOutcome(output=merged.output, frames=merged.frames, duration_s=merged.duration_s)


class JobRun:
    """One run of a job: the actions its doit tasks call, and what the merge did."""

    def __init__(
        self,
        ctx: JobContext,
        executor: ChunkExecutor,
        *,
        chunk_ids: Iterable[int] | None = None,
        merge: bool = True,
        verbose: bool = False,
        verify_seams: bool = False,
    ) -> None:
        self.ctx = ctx
        self.verify_seams = verify_seams or ctx.spec.verify.seams
        self.executor = executor
        self.chunk_ids = list(chunk_ids) if chunk_ids is not None else None
        self.verbose = verbose
        self.merge_requested = merge
        self.merge: MergeOutcome | None = None
        self.coop: CooperativeChunks | None = None  # leases: see cooperate(); None renders without
        self.merge_where = MergeWhere.LOCAL

    @property
    def subset(self) -> bool:
        """Only some chunks run (`--chunks`): a merge whose other inputs are missing waits, it has not failed."""
        return self.chunk_ids is not None and set(self.chunk_ids) != {chunk.id for chunk in self.ctx.spec.chunks}

    def actions(self) -> TaskActions:
        return TaskActions(
            chunk_uptodate=self.chunk_uptodate,
            render_chunk=self.render_chunk,
            merge_uptodate=self.merge_uptodate,
            merge=self.run_merge,
            clean=self.clean,
        )

    def tasks(
        self, *, basename: str = "render", chunk_ids: Iterable[int] | None = None, merge: bool | None = None
    ) -> Iterator[dict[str, Any]]:
        """The doit task dicts of this run (see :func:`helios_kit.dag.job_tasks`)."""
        return job_tasks(
            self.ctx.spec,
            self.actions(),
            basename=basename,
            chunk_ids=self.chunk_ids if chunk_ids is None else chunk_ids,
            merge=self.merge_requested if merge is None else merge,
        )

    def cooperate(self, leases: LeaseStore) -> None:
        """Render only under a chunk lease in the store (runners sharing the store split the job)."""
        ctx = self.ctx
        self.coop = CooperativeChunks(
            leases,
            is_complete=lambda chunk: not ctx.force and self._complete(chunk),
            render=lambda chunk, stop: self._render_now(chunk, stop).state,
            mark_skipped=self.executor.mark_skipped,
            cancel=self.executor.cancel,
        )

    # -- the actions -------------------------------------------------------------------------------------
    def _complete(self, chunk: Chunk) -> bool:
        """The chunk is in the store, current, and (when seams are checked) with its seam images."""
        seams_kept = not self.verify_seams or seams.has_images(self.ctx.store, self.ctx.spec, chunk)
        return self.ctx.chunk_complete(chunk) and seams_kept

    def chunk_uptodate(self, chunk: Chunk) -> bool:
        if self.ctx.force or self.executor.cancel.is_set():
            return False
        if self._complete(chunk):
            self.executor.mark_skipped(chunk)
            return True
        return False

    def render_chunk(self, chunk: Chunk) -> bool:
        self.ctx.store.forget(chunk.output_file)  # from here on, its checks ask the store, not the snapshot
        if self.coop is not None:
            return self.coop.render(chunk)
        return self._render_now(chunk).state.done

    def _render_now(self, chunk: Chunk, stop: threading.Event | None = None) -> ChunkOutcome:
        outcome = self.executor.run_chunk(chunk, stop)
        if outcome.manifest is not None:  # what the worker committed: the next run's done index vouches for it
            self.ctx.store.remember_manifest(chunk.output_file, outcome.manifest)
        if self.verbose:
            note = outcome.error or f"{outcome.state.value} in {outcome.duration_ms / 1000:.2f} s"
            print(f"chunk {chunk.id}: {note}", flush=True)
        return outcome

    def merge_uptodate(self) -> bool:
        executor, ctx = self.executor, self.ctx
        if executor.cancel.is_set():
            return True  # nothing more to do: the dependent chunks report the cancel
        if self.coop is not None and self.coop.deferred and not self.coop.waiting:
            return True  # chunks other runners hold come first: the wait pass merges (see run())
        manifests = ctx.input_manifests()
        digest = ctx.merge_digest(manifests)
        if digest is None:
            if self.subset:
                self.merge = MergeOutcome(pending=f"chunks {id_ranges(ctx.missing_chunks(manifests))} not complete")
                executor.emit(ProgressEvent(kind=EventKind.MERGE_SKIPPED, error=self.merge.pending))
                return True
            return False
        if not ctx.force and ctx.store.is_complete(ctx.spec.merge.output_file, digest):
            config = ctx.spec.config
            self.merge = MergeOutcome(
                output=ctx.store.uri(ctx.spec.merge.output_file),
                frames=config.frame_count,
                duration_s=config.frame_count / config.fps,
                skipped=True,
            )
            executor.emit(
                ProgressEvent(kind=EventKind.MERGE_SKIPPED, output=self.merge.output, frames=config.frame_count)
            )
            return True
        return False

    def run_merge(self) -> bool:
        executor = self.executor
        executor.emit(ProgressEvent(kind=EventKind.MERGE_STARTED))
        try:
            if self.verify_seams:
                seams.check_seams(self.ctx.store, self.ctx.spec)
            outcome = self._merge()
        except HeliosError as error:
            self.merge = MergeOutcome(error=str(error))
            executor.emit(ProgressEvent(kind=EventKind.MERGE_FAILED, error=str(error)))
            if self.verbose:
                print(f"merge failed: {error}", flush=True)
            return False
        self.merge = outcome
        executor.emit(ProgressEvent(kind=EventKind.MERGED, output=outcome.output, frames=outcome.frames))
        if self.verbose:
            print(f"merged → {outcome.output} ({outcome.frames} frames, {outcome.duration_s:.3f} s)", flush=True)
        return True

    def _merge(self) -> MergeOutcome:
        """Here, or next to the store on the backend (`--merge`, see helios_kit.merging)."""
        executor = self.executor
        if choose_merge(self.merge_where, self.ctx, executor.backend) is MergeWhere.LOCAL:
            return merge_job(self.ctx, cancel=executor.cancel)
        merged = merge_remotely(self.ctx, executor.backend, cancel=executor.cancel)
        return MergeOutcome(output=merged.output, frames=merged.frames, duration_s=merged.duration_s)

    def clean(self, rels: list[str]) -> None:
        for rel in rels:
            self.ctx.store.delete(rel)

    # -- the whole run -----------------------------------------------------------------------------------
    def run(self, *, db_file: Path | None = None) -> str | None:
        """Run the tasks with DoitMain; returns doit's own error line, if any. With leases, two passes (see
        :mod:`helios_kit.cooperate`): claim what is free, then wait for (or take over) the deferred chunks
        and merge."""
        db_file = db_file or _doit_db_file(self.ctx)

        def tasks_of(chunk_ids: list[int] | None, merge: bool) -> Callable[[], Iterator[dict[str, Any]]]:
            return lambda: self.tasks(chunk_ids=chunk_ids, merge=merge)

        count = len(self.ctx.spec.chunks)
        error = run_tasks(self.tasks, db_file=db_file, concurrency=self.executor.concurrency, task_count=count)
        if self.coop is not None:
            self.coop.leases.flush()  # the leases of the chunks committed so far (batched on object stores)
        if self.coop is None or not self.coop.deferred or error or self.executor.cancel.is_set():
            return error
        self.coop.waiting = True
        failed = any(outcome.state is ChunkState.FAILED for outcome in self.executor.outcomes.values())
        error = run_tasks(
            tasks_of(sorted(self.coop.deferred), self.merge_requested and not failed),
            db_file=db_file,
            concurrency=self.executor.concurrency,
            task_count=count,
        )
        self.coop.leases.flush()
        return error

    def report(self, error: str | None, duration_ms: float) -> JobReport:
        """What this run did, one outcome per selected chunk."""
        spec, executor = self.ctx.spec, self.executor
        selected = self.chunk_ids if self.chunk_ids is not None else [chunk.id for chunk in spec.chunks]
        outcomes = []
        for chunk_id in selected:
            outcome = executor.outcomes.get(chunk_id)
            if outcome is None:  # doit never reached it (cancelled while scheduling)
                outcome = ChunkOutcome(
                    chunk_id=chunk_id,
                    state=ChunkState.CANCELLED if executor.cancel.is_set() or executor.fatal else ChunkState.FAILED,
                    error=f"not started: {executor.fatal}" if executor.fatal else (error or "not run"),
                )
            outcomes.append(outcome)
        return JobReport(
            job_id=spec.job_id,
            total_chunks=len(selected),
            chunks=outcomes,
            merge=self.merge,
            cancelled=executor.cancel.is_set(),
            error=error,
            duration_ms=duration_ms,
            merge_requested=self.merge_requested,
            backups_failed=executor.backups.failed if executor.backups is not None else 0,
        )


def _doit_db_file(ctx: JobContext) -> Path:
    """doit's cache for this job: under the job dir's `.helios/`, or the temp dir when that is read-only."""
    db_file = ctx.job_dir / STATE_DIR / f"{ctx.spec.job_id}.doit.db"
    try:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        db_file = Path(tempfile.gettempdir()) / f"helios-{ctx.spec.job_id}.doit.db"
    return db_file


def execute_job(
    spec: JobSpec,
    job_url: str,
    job_dir: Path,
    backend: Backend,
    options: RunOptions | None = None,
    *,
    cancel: threading.Event | None = None,
    sinks: Iterable[EventSink] = (),
    context: JobContext | None = None,
) -> JobReport:
    """Render what is not complete, then merge; returns the report (raises only for user errors up front)."""
    options = options or RunOptions()
    started = time.monotonic()
    if options.chunks is not None:
        for chunk_id in options.chunks:
            spec.chunk(chunk_id)  # SpecError naming the ids that exist
    ctx = context or JobContext.prepare(spec, job_url, job_dir, store_url=options.store, force=options.force)
    try:
        ctx.store.check_confined([*spec.merge.inputs, spec.merge.output_file])  # before anything renders
        outputs = [*spec.merge.inputs, spec.merge.output_file]
        with ThreadPoolExecutor(2, thread_name_prefix="helios-prepare") as pool:  # the store's requests at once
            writable = pool.submit(ctx.store.check_writable)
            cleared = pool.submit(clear_marker, ctx.store, spec.job_id)  # an earlier run's cancel does not stop this
            ctx.store.preload(outputs, spec.job_id)  # one listing per folder, the done index, the rest at once
            writable.result()  # StoreError: not writable, before anything renders
            cleared.result()
        swept = ctx.store.sweep_temporaries(outputs)  # from the snapshot's listing
        if swept:
            log.info("removed %d temporary objects of interrupted commits: %s", len(swept), ", ".join(swept))
        verify = options.verify_seams or spec.verify.seams
        chunk_context = ctx.chunk_context().model_copy(update={"verify_seams": verify})
        executor = ChunkExecutor(backend, spec, chunk_context, options, cancel=cancel, sinks=sinks)
        executor.emit(ProgressEvent(kind=EventKind.RESOLVED, output=ctx.composition.source))
        run = JobRun(ctx, executor, chunk_ids=options.chunks, merge=options.merge, verify_seams=verify)
        run.merge_where = choose_merge(options.merge_where, ctx, backend)  # a bad --merge fails before rendering
        if options.leases:
            run.cooperate(LeaseStore(ctx.store, ttl=options.lease_ttl))
        if options.backups.active_for(backend.backups_by_default):
            executor.enable_backups(options.backups, len(options.chunks or spec.chunks))
        try:
            with MarkerOnCancel(ctx.store, spec.job_id, executor.cancel):  # a cancel reaches remote workers
                error = run.run()
        finally:
            ctx.store.save_index(spec.job_id, outputs)  # the manifests this run learned, for the next one
            if executor.backups is not None:
                executor.backups.close()
    finally:
        if context is None:
            ctx.close()
    return run.report(error, (time.monotonic() - started) * 1000)


# ---------------------------------------------------------------------------------------------------
# A project's dodo.py


def project_tasks(
    job: str | Path,
    *,
    backend: str = "local",
    basename: str = "render",
    retries: int = 1,
    chunk_timeout: float | None = None,
    store: str | None = None,
    verbose: bool = True,
) -> Iterator[dict[str, Any]]:
    """Tasks for a project's dodo.py rendering the JobSpec `job` (a path or URL) incrementally.

    ``def task_render(): yield from project_tasks("job.json")``. Concurrency is doit's ``-n``.
    """
    from helios_kit.loaders import load_spec
    from helios_kit.plugins import make_backend

    source = str(local_path(str(job)).resolve()) if is_local(str(job)) else str(job)
    spec, job_dir = load_spec(source)
    # doit's runner decides how many chunk tasks run at once (`doit -n N`); with its thread runner, the
    # executor's limit is the chunk count so only doit limits.
    options = RunOptions(concurrency=len(spec.chunks), retries=retries, chunk_timeout=chunk_timeout, store=store)
    ctx = JobContext.prepare(spec, source, job_dir, store_url=store)
    executor = ChunkExecutor(make_backend(backend), spec, ctx.chunk_context(), options)
    yield from JobRun(ctx, executor, verbose=verbose).tasks(basename=basename)


def plan_project(
    project_dir: str | Path,
    *,
    input: str = "index.html",
    job_file: str = "job.json",
    chunks: int | None = None,
    chunk_frames: int | None = None,
    **config: Any,
) -> Path:
    """(Re)write `project_dir/job_file` from render settings, only when the plan changes; returns its path.

    The job id is stable (the project folder's name), so re-planning an unchanged project keeps every chunk.
    """
    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig, dump, dumps, load

    project = Path(project_dir).resolve()
    render_config = RenderConfig(input=input, **config)
    job_id = "".join(c if c.isalnum() or c in "._-" else "-" for c in project.name).strip("-._") or "project"
    spec = plan_job(render_config, concurrency=chunks, chunk_frames=chunk_frames, job_id=job_id)
    path = project / job_file
    try:
        current = dumps(load(path)) if path.exists() else None
    except HeliosError:
        current = None
    if current != dumps(spec):
        dump(spec, path)
    return path
