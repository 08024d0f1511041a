"""JobSpec → doit tasks: one task per chunk (named by its id) and a `merge` task that depends on all of them.

Up to date means what the artifact store says, never doit's own database: a chunk task is up to date when
its output and a done-manifest with the matching chunk digest exist in the store (DESIGN §3); the merge is
up to date when the merged output's manifest records the digest of its inputs' manifests. doit's database
only caches (deleting it re-renders nothing) — the tasks have no `file_dep`/`targets`, only `uptodate`.

Two ways in:

* :func:`run_job_dag` — what `helios job run` uses: the tasks are handed to ``DoitMain`` through a custom
  task loader and run with doit's thread runner. Every local chunk renders in its own worker process
  (:class:`helios_kit.backends.local.LocalBackend`), so the runner threads only supervise processes (local)
  or wait on remote invocations (Lambda, Cloud Run); that keeps progress events, cancellation and
  process-group kills in the parent.
* :func:`project_tasks` — for a project's ``dodo.py``: ``def task_render(): yield from project_tasks(...)``.
  Then ``doit render`` renders incrementally, ``doit list --all`` shows the chunk tasks and the merge,
  ``doit -n 2 render`` runs chunks in parallel (doit's process runner forks, which these tasks support),
  ``doit clean render`` removes the outputs and manifests and ``doit forget`` just drops doit's cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios_kit.backends.base import ChunkContext
from helios_kit.composition import (
    DependencyChecker,
    ResolvedComposition,
    chunk_digest,
    config_digest,
    default_store_url,
    is_http,
    is_local,
    resolve_composition,
)
from helios_kit.errors import HeliosError, RenderError
from helios_kit.executor import ChunkExecutor, EventKind, MergeOutcome, ProgressEvent
from helios_kit.spec import Chunk, JobSpec
from helios_kit.store import ArtifactStore, DoneManifest, manifest_current

log = logging.getLogger("helios.dag")

#: doit's cache for `helios job run`, per job, under the job dir's `.helios/`.
STATE_DIR = ".helios"


@dataclass
class JobContext:
    """A job resolved for execution: its spec, where it came from, its store and its composition."""

    spec: JobSpec
    job_url: str
    job_dir: Path
    store: ArtifactStore
    composition: ResolvedComposition
    force: bool = False
    workspace: Path | None = None
    _digests: dict[int, str] = field(default_factory=dict)
    _checker: DependencyChecker | None = None

    @property
    def input_location(self) -> str:
        return self.composition.input_location

    @property
    def checker(self) -> DependencyChecker:
        """One dependency checker per run: each file hashed and each URL fetched at most once."""
        if self._checker is None:
            self._checker = self.composition.checker()
        return self._checker

    def close(self) -> None:
        """Remove the downloaded copy of a remote composition, if any."""
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None

    @classmethod
    def prepare(
        cls,
        spec: JobSpec,
        job_url: str,
        job_dir: str | Path,
        *,
        store_url: str | None = None,
        force: bool = False,
    ) -> JobContext:
        """Resolve the composition (as the workers do, see helios_kit.composition) and the store (default:
        the job dir)."""
        job_dir = Path(job_dir)
        workspace = Path(tempfile.mkdtemp(prefix="helios-resolve-"))
        try:
            composition = resolve_composition(spec, job_url, workspace, job_dir=job_dir)
        except BaseException:
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        downloaded = any(workspace.iterdir())  # an fsspec composition: kept for the merge's audio, see close()
        if not downloaded:
            shutil.rmtree(workspace, ignore_errors=True)
        if store_url is None:  # a local job: its folder; http(s): the current folder; s3:// etc.: the job's folder
            store_url = str(job_dir) if is_local(job_url) or is_http(job_url) else default_store_url(job_url)
        return cls(
            workspace=workspace if downloaded else None,
            spec=spec,
            job_url=job_url,
            job_dir=job_dir,
            store=ArtifactStore(store_url),
            composition=composition,
            force=force,
        )

    def chunk_context(self) -> ChunkContext:
        return ChunkContext(job_url=self.job_url, job_dir=str(self.job_dir), store_url=self.store.url, force=self.force)

    def digest(self, chunk: Chunk) -> str:
        if chunk.id not in self._digests:
            self._digests[chunk.id] = chunk_digest(self.spec, chunk)
        return self._digests[chunk.id]

    def chunk_complete(self, chunk: Chunk) -> bool:
        return self.store.is_complete(chunk.output_file, self.digest(chunk), self.checker)

    def input_manifests(self) -> list[DoneManifest | None]:
        """The manifests of the merge inputs (None where a chunk is not complete)."""
        manifests: list[DoneManifest | None] = []
        for chunk in self.spec.chunks:
            manifest = self.store.read_manifest(chunk.output_file)
            if manifest is None or not manifest_current(manifest, self.digest(chunk), self.checker):
                manifests.append(None)
            else:
                manifests.append(manifest)
        return manifests

    def merge_digest(self, manifests: list[DoneManifest | None]) -> str | None:
        """Hash of the inputs' manifests (digest, bytes) and the output settings; None when one is missing."""
        if any(manifest is None for manifest in manifests):
            return None
        payload = {
            "config": config_digest(self.spec.config),
            "output": self.spec.merge.output_file,
            "inputs": [[m.digest, m.sha256, m.size] for m in manifests if m is not None],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def missing_chunks(self, manifests: list[DoneManifest | None]) -> list[int]:
        return [chunk.id for chunk, manifest in zip(self.spec.chunks, manifests, strict=True) if manifest is None]


def _ranges(ids: list[int]) -> str:
    if not ids:
        return ""
    parts: list[str] = []
    start = prev = ids[0]
    for value in [*ids[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)


def merge_job(ctx: JobContext, *, cancel: threading.Event | None = None) -> MergeOutcome:
    """Join the complete chunks into the job's output (fetching them first from a remote store), mix the
    composition's audio once, and commit the output with its own manifest. Raises HeliosError on failure."""
    from helios_kit.render.audio import discover_audio
    from helios_kit.stitch import stitch

    spec = ctx.spec
    manifests = ctx.input_manifests()
    digest = ctx.merge_digest(manifests)
    if digest is None:
        raise RenderError(f"merge: chunks {_ranges(ctx.missing_chunks(manifests))} are not complete")
    output_rel = spec.merge.output_file
    work = Path(tempfile.mkdtemp(prefix="helios-merge-"))
    try:
        inputs: list[Path] = []
        for chunk in spec.chunks:
            local = ctx.store.local_path(chunk.output_file)
            if local is None:
                if cancel is not None and cancel.is_set():
                    raise RenderError("merge: cancelled")
                local = ctx.store.fetch(chunk.output_file, work / "chunks" / chunk.output_file)
            inputs.append(local)
        audio = None
        try:
            plan = discover_audio(ctx.input_location)
        except HeliosError as error:
            log.warning("merge: audio not mixed: %s", error)
        else:
            if plan.tracks:
                audio = plan.model_copy(update={"timeline_start_s": spec.config.start_frame / spec.config.fps})
        merged = work / ("merged" + (Path(output_rel).suffix or ".mp4"))
        result = stitch(inputs, merged, audio=audio, expected_frames=spec.config.frame_count)
        ctx.store.commit(merged, output_rel, digest=digest, job_id=spec.job_id, frame_count=result.frames)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MergeOutcome(output=ctx.store.uri(output_rel), frames=result.frames, duration_s=result.duration_s)


def _merged_outcome(ctx: JobContext, skipped: bool) -> MergeOutcome:
    config = ctx.spec.config
    return MergeOutcome(
        output=ctx.store.uri(ctx.spec.merge.output_file),
        frames=config.frame_count,
        duration_s=config.frame_count / config.fps,
        skipped=skipped,
    )


def job_tasks(
    ctx: JobContext,
    executor: ChunkExecutor,
    *,
    basename: str = "render",
    chunk_ids: Iterable[int] | None = None,
    verbose: bool = False,
    merge: bool = True,
) -> Iterator[dict[str, Any]]:
    """doit task dicts: `<basename>:chunk-<id>` per chunk and `<basename>:merge` depending on all of them."""
    selected = set(chunk_ids) if chunk_ids is not None else None
    subset = selected is not None and selected != {chunk.id for chunk in ctx.spec.chunks}
    names = []
    for chunk in ctx.spec.chunks:
        if selected is not None and chunk.id not in selected:
            continue
        name = f"chunk-{chunk.id}"
        names.append(f"{basename}:{name}")
        yield {
            "basename": basename,
            "name": name,
            "doc": f"frames [{chunk.start_frame}, {chunk.end_frame}) → {chunk.output_file}",
            "actions": [(_chunk_action, [ctx, executor, chunk, verbose])],
            "uptodate": [(_chunk_uptodate, [ctx, executor, chunk])],
            "clean": [(_clean, [ctx, [chunk.output_file]])],
            "verbosity": 2,  # never let doit swap sys.stdout under running threads
        }
    if not merge:
        return
    yield {
        "basename": basename,
        "name": "merge",
        "doc": f"{len(ctx.spec.chunks)} chunks → {ctx.spec.merge.output_file}",
        "actions": [(_merge_action, [ctx, executor, verbose])],
        "uptodate": [(_merge_uptodate, [ctx, executor, subset])],
        "task_dep": names,
        "clean": [(_clean, [ctx, [ctx.spec.merge.output_file]])],
        "verbosity": 2,  # never let doit swap sys.stdout under running threads
    }


def _chunk_uptodate(ctx: JobContext, executor: ChunkExecutor, chunk: Chunk) -> bool:
    if ctx.force or executor.cancel.is_set():
        return False
    if ctx.chunk_complete(chunk):
        executor.mark_skipped(chunk)
        return True
    return False


def _chunk_action(ctx: JobContext, executor: ChunkExecutor, chunk: Chunk, verbose: bool) -> bool:
    outcome = executor.run_chunk(chunk)
    if verbose:
        note = outcome.error or f"{outcome.state.value} in {outcome.duration_ms / 1000:.2f} s"
        print(f"chunk {chunk.id}: {note}", flush=True)
    return outcome.state.done


def _merge_uptodate(ctx: JobContext, executor: ChunkExecutor, subset: bool) -> bool:
    if executor.cancel.is_set():
        return True  # nothing more to do: the dependent chunks report the cancel
    manifests = ctx.input_manifests()
    digest = ctx.merge_digest(manifests)
    if digest is None:
        if subset:  # `--chunks` left others to render: the merge waits for them, it has not failed
            executor.merge = MergeOutcome(pending=f"chunks {_ranges(ctx.missing_chunks(manifests))} not complete")
            executor.emit(ProgressEvent(kind=EventKind.MERGE_SKIPPED, error=executor.merge.pending))
            return True
        return False
    if not ctx.force and ctx.store.is_complete(ctx.spec.merge.output_file, digest):
        executor.merge = _merged_outcome(ctx, skipped=True)
        executor.emit(
            ProgressEvent(kind=EventKind.MERGE_SKIPPED, output=executor.merge.output, frames=executor.merge.frames)
        )
        return True
    return False


def _merge_action(ctx: JobContext, executor: ChunkExecutor, verbose: bool) -> bool:
    executor.emit(ProgressEvent(kind=EventKind.MERGE_STARTED))
    try:
        outcome = merge_job(ctx, cancel=executor.cancel)
    except HeliosError as error:
        executor.merge = MergeOutcome(error=str(error))
        executor.emit(ProgressEvent(kind=EventKind.MERGE_FAILED, error=str(error)))
        if verbose:
            print(f"merge failed: {error}", flush=True)
        return False
    executor.merge = outcome
    executor.emit(ProgressEvent(kind=EventKind.MERGED, output=outcome.output, frames=outcome.frames))
    if verbose:
        print(f"merged → {outcome.output} ({outcome.frames} frames, {outcome.duration_s:.3f} s)", flush=True)
    return True


def _clean(ctx: JobContext, rels: list[str]) -> None:
    for rel in rels:
        ctx.store.delete(rel)


# ---------------------------------------------------------------------------------------------------
# Running the tasks with doit


def _doit_main(namespace: dict[str, Any], args: list[str]) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    return DoitMain(ModuleTaskLoader(namespace), config_filenames=()).run(args)


class _Reporter:
    """A silent doit reporter that keeps doit's own errors (the executor reports the chunks)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

    def add_failure(self, task: Any, fail: Any) -> None:
        from doit.exceptions import UnmetDependency

        if isinstance(fail, UnmetDependency):  # the merge (or the group) after a failed chunk: already reported
            return
        ours = task.name.endswith(":merge") or ":chunk-" in task.name
        if not ours or "Traceback" in fail.get_msg():  # doit's own trouble, or an exception inside our action
            self.errors.append(f"{task.name}: {fail.get_msg().strip().splitlines()[-1]}")

    def runtime_error(self, msg: str) -> None:
        self.errors.append(msg.strip().splitlines()[-1] if msg.strip() else "doit runtime error")

    def cleanup_error(self, exception: BaseException) -> None:
        self.errors.append(str(exception))


def run_job_dag(
    ctx: JobContext,
    executor: ChunkExecutor,
    *,
    chunk_ids: Iterable[int] | None = None,
    db_file: Path | None = None,
) -> str | None:
    """Run the job's tasks with DoitMain (thread runner, `executor.concurrency` at once, `--continue` so one
    failed chunk does not stop the others). Returns doit's own error line, if any."""
    reporter = _Reporter()
    ids = list(chunk_ids) if chunk_ids is not None else None

    def task_render() -> Iterator[dict[str, Any]]:
        yield from job_tasks(ctx, executor, chunk_ids=ids, merge=executor.options.merge)

    if db_file is None:
        db_file = ctx.job_dir / STATE_DIR / f"{ctx.spec.job_id}.doit.db"
    try:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        db_file = Path(tempfile.gettempdir()) / f"helios-{ctx.spec.job_id}.doit.db"
    namespace = {
        "task_render": task_render,
        "DOIT_CONFIG": {"reporter": reporter, "verbosity": 0},
    }
    args = [
        "run",
        "--continue",
        "--db-file",
        str(db_file),
        "--backend",
        "json",
        "-n",
        str(executor.concurrency),
        "-P",
        "thread",
        "render",
    ]
    if executor.concurrency == 1:
        args = ["run", "--continue", "--db-file", str(db_file), "--backend", "json", "render"]
    # doit's dispatcher recurses about once per task when many finish together; give it room for big jobs
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * len(ctx.spec.chunks) + 2000))
    try:
        code = _doit_main(namespace, args)
    finally:
        sys.setrecursionlimit(limit)
    if reporter.errors:
        return reporter.errors[0]
    if code == 3:
        return "doit could not start the job's tasks"
    return None


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
    from helios_kit.executor import RunOptions
    from helios_kit.loaders import load_spec
    from helios_kit.plugins import get_plugins

    source = str(Path(job).resolve()) if "://" not in str(job) else str(job)
    spec, job_dir = load_spec(source)
    options = RunOptions(concurrency=1, retries=retries, chunk_timeout=chunk_timeout, store=store)
    ctx = JobContext.prepare(spec, source, job_dir, store_url=store)
    backend_obj = get_plugins().backend(backend)()
    # concurrency=1 per process: doit's runner decides how many chunk tasks run at once (`doit -n N`); with
    # its thread runner, raise the limit to the chunk count so only doit limits.
    options.concurrency = len(spec.chunks)
    executor = ChunkExecutor(backend_obj, spec, ctx.chunk_context(), options)
    yield from job_tasks(ctx, executor, basename=basename, verbose=verbose)


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
