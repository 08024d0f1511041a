"""`helios job ...`: validate a JobSpec, run it, and track jobs (status, list, cancel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from helios_kit.composition.locations import is_local
from helios_kit.loaders import LoaderOptions, load_spec
from helios_kit.protocol import EventKind, ProgressEvent

if TYPE_CHECKING:
    from datetime import datetime

    from helios_kit.manager import JobManager
    from helios_kit.repository import JobRepository, JobStatus
    from helios_kit.run import RunOptions
    from helios_kit.spec import JobSpec


@click.group("job")
def job_group() -> None:
    """Validate, run and track JobSpecs (job.json files, http(s):// or s3:// URLs)."""


@job_group.command("validate")
@click.argument("source")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for a remote spec (default 30).")
def validate_command(source: str, timeout: float | None) -> None:
    """Load and validate a JobSpec; print a summary."""
    options = LoaderOptions() if timeout is None else LoaderOptions(timeout=timeout)
    spec, job_dir = load_spec(source, options)
    if is_local(source):
        check_outputs_confined(spec, str(job_dir))
    config = spec.config
    click.echo(
        f"valid: job {spec.job_id}: {config.frame_count} frames "
        f"[{config.start_frame}, {config.end_frame}) at {config.fps:g} fps, {config.width}x{config.height}, "
        f"{len(spec.chunks)} chunk{'s' if len(spec.chunks) != 1 else ''} → {spec.merge.output_file}"
    )
    click.echo(f"  input: {config.input}  (job dir: {job_dir})")
    for chunk in spec.chunks:
        click.echo(
            f"  chunk {chunk.id}: frames [{chunk.start_frame}, {chunk.end_frame}) ({chunk.frame_count}) "
            f"→ {chunk.output_file}"
        )
    click.echo(f"  merge: {len(spec.merge.inputs)} inputs → {spec.merge.output_file}")


def check_outputs_confined(spec: JobSpec, store: str) -> None:
    """StoreError (one line naming the path) when a symlink would lead a chunk output, a manifest or the
    merged output out of a local store: reported before anything renders."""
    from helios_kit.store import ArtifactStore

    ArtifactStore(store).check_confined([*spec.merge.inputs, spec.merge.output_file])


# ---------------------------------------------------------------------------------------------------
# run / status / list / cancel


def parse_chunk_ids(text: str) -> list[int]:
    """`0,3,5-7` → [0, 3, 5, 6, 7]; SpecError naming the bad part."""
    from helios_kit.errors import SpecError

    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        start, dash, end = part.partition("-")
        try:
            first = int(start)
            last = int(end) if dash else first
        except ValueError:
            raise SpecError(f"--chunks: {part!r} is not a chunk id or a range like 5-7") from None
        if first < 0 or last < first:
            raise SpecError(f"--chunks: {part!r} is not a valid range")
        ids.extend(range(first, last + 1))
    if not ids:
        raise SpecError("--chunks: no chunk ids given")
    return sorted(set(ids))


_CLICK_TYPES = {str: click.STRING, int: click.INT, float: click.FLOAT}


def _backend_flags() -> tuple[list[click.Option], dict[str, tuple[str, set[str]]]]:
    """A click option per field of every registered backend's Options; dest → (field, backends taking it)."""
    import logging
    import typing

    from helios_kit.plugins import get_plugins

    owners: dict[str, tuple[str, set[str]]] = {}
    params: list[click.Option] = []
    plugins = get_plugins()
    for name in plugins.names("backend"):
        try:
            backend_cls = plugins.backend(name)
        except Exception as error:  # a broken plugin must not break `helios job run`
            logging.getLogger("helios.cli").warning("warning: backend %s unavailable: %s", name, error)
            continue
        for field_name, field in backend_cls.Options.model_fields.items():
            dest = f"backend__{field_name}"
            if dest in owners:
                owners[dest][1].add(name)
                continue
            owners[dest] = (field_name, {name})
            flag = "--" + field_name.replace("_", "-")
            annotation = field.annotation
            args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
            help_text = (field.description or "").rstrip(".")
            if args[0] is bool:
                params.append(
                    click.Option([f"{flag}/--no-{flag[2:]}", dest], default=None, help=f"[{name}] {help_text}")
                )
            else:
                params.append(
                    click.Option(
                        [flag, dest],
                        type=_CLICK_TYPES.get(args[0], click.STRING),
                        default=None,
                        help=f"[{name}] {help_text}",
                    )
                )
    for dest, (_, names) in owners.items():
        for param in params:
            if param.name == dest:
                param.help = f"[{', '.join(sorted(names))}] {param.help.split('] ', 1)[-1]}"
    return params, owners


def _open_repository() -> JobRepository:
    from helios_kit.repository import SQLiteJobRepository

    return SQLiteJobRepository()


#: The original Helios CLI's `helios job run --adapter` names, and the backends that stand for them.
ADAPTER_BACKENDS = {"local": "local", "aws": "lambda", "gcp": "cloudrun"}


def backend_for_adapter(backend: str | None, adapter: str | None) -> str:
    """The backend to use from `--backend` and its alias `--adapter` (the original CLI's aws|gcp|local)."""
    from helios_kit.errors import SpecError

    if adapter is None:
        return backend or "local"
    mapped = ADAPTER_BACKENDS.get(adapter)
    if mapped is None:
        known = ", ".join(f"{name} (= --backend {target})" for name, target in ADAPTER_BACKENDS.items())
        raise SpecError(f"--adapter: {adapter!r} is not available; known: {known}")
    if backend is not None and backend != mapped:
        raise SpecError(f"--adapter {adapter} means --backend {mapped}, but --backend {backend} was given")
    return mapped


@job_group.command("run")
@click.argument("source")
@click.option("--backend", default=None, help="Where chunks run (see `helios plugins`). Default: local.")
@click.option(
    "--adapter",
    default=None,
    metavar="aws|gcp|local",
    help="The original Helios CLI's name for --backend: aws = lambda, gcp = cloudrun, local = local.",
)
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks at once (default: the backend's, CPU count for local).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts for a chunk that fails in a retryable way.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="First backoff in seconds (doubles each attempt, plus jitter).",
)
@click.option(
    "--chunk-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds one attempt of a chunk may take.",
)
@click.option("--store", default=None, help="Artifact store (folder or fsspec URL; default: the job's folder).")
@click.option("--force", is_flag=True, help="Render every chunk even when complete.")
@click.option("--chunks", "chunk_spec", default=None, metavar="IDS", help="Only these chunks, e.g. 0,3,5-7.")
@click.option("--no-merge", "no_merge", is_flag=True, help="Render the chunks only; do not merge them.")
@click.option(
    "--merge",
    "merge_where",
    type=click.Choice(["auto", "local", "remote"]),
    default="auto",
    show_default=True,
    help="Where to merge: here, next to the store on the backend (lambda, cloudrun, dask), or auto (remote "
    "when the store is remote and the backend can merge).",
)
@click.option("--no-leases", "no_leases", is_flag=True, help="Take no chunk leases (only this runner uses the store).")
@click.option(
    "--backups/--no-backups",
    "backups",
    default=None,
    help="Backup attempts for straggling chunks (default: on for remote backends, off for local).",
)
@click.option(
    "--backup-after",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.75,
    show_default=True,
    help="Share of chunks done before stragglers get backups.",
)
@click.option(
    "--backup-factor",
    type=click.FloatRange(min=1, min_open=True),
    default=1.5,
    show_default=True,
    help="A chunk straggles once it runs longer than this x the median chunk time.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds a chunk lease lasts unless renewed (default 30, or $HELIOS_LEASE_TTL).",
)
@click.option("--detach", is_flag=True, help="Run in the background; print the job id and return.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, only the summary line.")
def run_command(
    source: str,
    backend: str | None,
    adapter: str | None,
    concurrency: int | None,
    retries: int,
    retry_delay: float,
    chunk_timeout: float | None,
    store: str | None,
    force: bool,
    chunk_spec: str | None,
    no_merge: bool,
    merge_where: str,
    no_leases: bool,
    backups: bool | None,
    backup_after: float,
    backup_factor: float,
    lease_ttl: float | None,
    detach: bool,
    quiet: bool,
    **backend_values: object,
) -> None:
    """Run a JobSpec: render the chunks that are not complete, then merge.

    Re-running a completed job renders nothing; a run that was killed resumes with the chunks that were
    not complete. Backend flags below apply to the backend named in brackets.
    """
    import sys

    from helios_kit.manager import JobManager
    from helios_kit.merging import MergeWhere
    from helios_kit.run import RunOptions
    from helios_kit.stragglers import BackupPolicy

    backend = backend_for_adapter(backend, adapter)
    given = _backend_options(backend, backend_values)
    options = RunOptions(
        concurrency=concurrency,
        retries=retries,
        retry_delay=retry_delay,
        chunk_timeout=chunk_timeout,
        force=force,
        store=store,
        merge=not no_merge,
        chunks=parse_chunk_ids(chunk_spec) if chunk_spec else None,
        merge_where=MergeWhere(merge_where),
        leases=not no_leases,
        lease_ttl=lease_ttl,
        backups=BackupPolicy(enabled=backups, after=backup_after, factor=backup_factor),
    )
    manager = JobManager(_repository_for_run(detach))
    if detach:
        _detach(manager, source, backend, given, options)
        return
    if not quiet and not is_local(source):
        click.echo(f"Fetching job spec from {source}", err=True)
    status = manager.create(source, backend=backend, backend_options=given, options=options)
    final = _run_until_done(manager, status, show_progress=not quiet and sys.stderr.isatty(), announce=not quiet)
    if not _print_outcome(manager, final):
        sys.exit(130 if final.state.value == "cancelled" else 1)


def _backend_options(backend: str, values: dict[str, object]) -> dict[str, object]:
    """The backend flags given on the command line, checked to belong to `backend` (the JobManager builds
    the backend from them through helios_kit.plugins.make_backend)."""
    from helios_kit.errors import SpecError
    from helios_kit.plugins import get_plugins

    get_plugins().backend(backend)  # UnknownNameError listing the known backends, before any flag error
    given: dict[str, object] = {}
    for dest, value in values.items():
        if value is None:
            continue
        field_name, owners = _BACKEND_OWNERS[dest]
        if backend not in owners:
            flag = "--" + field_name.replace("_", "-")
            raise SpecError(f"{flag} is an option of backend {', '.join(sorted(owners))}, not of {backend!r}")
        given[field_name] = value
    return given


def _repository_for_run(detach: bool) -> JobRepository:
    """The job records; when they cannot be opened, a foreground run goes on unrecorded (with a warning)."""
    from helios_kit.errors import StoreError

    try:
        return _open_repository()
    except StoreError as error:  # the render does not need the records: run, and say they are not kept
        if detach:
            raise
        from helios_kit.repository import InMemoryJobRepository

        click.echo(f"warning: {error}; this run is not recorded", err=True)
        return InMemoryJobRepository()


def _announce_composition(event: ProgressEvent) -> None:
    if event.kind is EventKind.RESOLVED:
        click.echo(f"composition: {event.output}", err=True)


def _run_until_done(manager: JobManager, status: JobStatus, *, show_progress: bool, announce: bool) -> JobStatus:
    """Run the created job here, with the progress bar when asked (else, unless quiet, a line saying which
    composition it uses); SIGINT/SIGTERM cancel it cleanly."""
    import signal

    def on_signal(*_: object) -> None:  # no locks in a signal handler: the manager's poller does the rest
        manager.stop_from_signal(status.id)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not show_progress:
            manager.sinks = (_announce_composition,) if announce else ()
            return manager.run(status.id, status=status)
        from helios_kit.commands.progress import RichProgress

        progress = RichProgress(load_spec(status.job_url)[0], selected=_selected_chunks(status))
        manager.sinks = (progress,)
        with progress:
            return manager.run(status.id, status=status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _selected_chunks(status: JobStatus) -> list[int]:
    return [chunk.id for chunk in status.chunks]


def _print_outcome(manager: JobManager, final: JobStatus) -> bool:
    """Warnings, each failed chunk's error and the summary line; True when the run succeeded."""
    report = manager.report(final.id)
    for warning in final.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report is None:
        click.echo(f"error: {final.error}", err=True)
        return False
    for outcome in report.chunks:
        if outcome.error and outcome.state.value == "failed":
            click.echo(f"error: {outcome.error}", err=True)
    click.echo(report.summary_line())
    return report.ok


def _detach(manager: JobManager, source: str, backend: str, given: dict, options: RunOptions) -> None:
    """Record the job and start `helios job run` again in its own session, without --detach."""
    import os
    import subprocess
    import sys

    status = manager.create(source, backend=backend, backend_options=given, options=options)
    argv = [
        sys.executable,
        "-m",
        "helios_kit.cli",
        "job",
        "run",
        status.job_url,
        "--backend",
        backend,
        "--quiet",
        "--retries",
        str(options.retries),
        "--retry-delay",
        str(options.retry_delay),
    ]
    if options.concurrency:
        argv += ["--concurrency", str(options.concurrency)]
    if options.chunk_timeout:
        argv += ["--chunk-timeout", str(options.chunk_timeout)]
    if options.store:
        argv += ["--store", options.store]
    if options.force:
        argv.append("--force")
    if not options.merge:
        argv.append("--no-merge")
    argv += ["--merge", options.merge_where.value]
    if not options.leases:
        argv.append("--no-leases")
    if options.lease_ttl:
        argv += ["--lease-ttl", str(options.lease_ttl)]
    if options.backups.enabled is not None:
        argv.append("--backups" if options.backups.enabled else "--no-backups")
    argv += ["--backup-after", str(options.backups.after), "--backup-factor", str(options.backups.factor)]
    if options.chunks:
        argv += ["--chunks", ",".join(map(str, options.chunks))]
    for field_name, value in given.items():
        flag = "--" + field_name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    log_dir = manager.repository.path.parent if hasattr(manager.repository, "path") else None
    log_path = (log_dir / f"{status.id}.log") if log_dir else os.devnull
    with open(log_path, "ab") as log:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=dict(os.environ, HELIOS_HOME=str(log_dir)) if log_dir else None,
        )
    click.echo(f"{status.id}: started in the background (log: {log_path}); `helios job status {status.id}`")


_BACKEND_PARAMS, _BACKEND_OWNERS = _backend_flags()
run_command.params.extend(_BACKEND_PARAMS)


def _age(when: datetime) -> str:
    from helios_kit.repository import utcnow

    seconds = max(0, int((utcnow() - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


@job_group.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
def status_command(job_id: str, as_json: bool) -> None:
    """Show a job's state, progress, chunks and result."""
    status = _open_repository().get(job_id)
    if as_json:
        click.echo(status.model_dump_json(by_alias=True, indent=2))
        return
    click.echo(
        f"{status.id}: {status.state.value}, {status.progress:g}% "
        f"({status.completed_chunks}/{status.total_chunks} chunks), updated {_age(status.updated_at)}"
    )
    if status.error:
        click.echo(f"  error: {status.error}")
    if status.result:
        click.echo(f"  output: {status.result.output} ({status.result.frames} frames, {status.result.duration:.3f} s)")
    for chunk in status.chunks:
        if chunk.state.value != "pending" or chunk.attempts:
            note = f" — {chunk.error}" if chunk.error else ""
            click.echo(f"  chunk {chunk.id}: {chunk.state.value}, {chunk.attempts} attempt(s){note}")
    for warning in status.warnings:
        click.echo(f"  warning: {warning}")


@job_group.command("list")
def list_command() -> None:
    """List known jobs (newest first)."""
    from rich.console import Console
    from rich.table import Table

    jobs = _open_repository().list()
    table = Table(title="helios jobs")
    for column in ("id", "state", "progress", "chunks", "age", "output"):
        table.add_column(column)
    for job in jobs:
        output = job.result.output if job.result else job.output
        table.add_row(
            job.id,
            job.state.value,
            f"{job.progress:g}%",
            f"{job.completed_chunks}/{job.total_chunks}",
            _age(job.created_at),
            output,
        )
    Console().print(table)


@job_group.command("cancel")
@click.argument("job_id")
@click.option("--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for the job to stop.")
def cancel_command(job_id: str, wait_s: float) -> None:
    """Stop a running job (from any terminal); it records `cancelled`."""
    import time

    from helios_kit.manager import JobManager

    manager = JobManager(_open_repository())
    status = manager.cancel(job_id)
    if status.state.finished:
        click.echo(f"{job_id}: {status.state.value}")
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = manager.get(job_id)
        if status.state.finished:
            break
        time.sleep(0.2)
    click.echo(f"{job_id}: cancel requested ({status.state.value})")
