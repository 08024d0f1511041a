"""`helios job ...`: validate a JobSpec, run it, and track jobs (status, list, cancel)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from helios_kit.commands.repo_option import open_named_repository, repository_option
from helios_kit.composition.locations import is_local
from helios_kit.loaders import LoaderOptions, load_spec
from helios_kit.protocol import EventKind, ProgressEvent

if TYPE_CHECKING:
    from datetime import datetime

    from helios_kit.commands.run_extras import RunExtras
    from helios_kit.manager import JobManager
    from helios_kit.repository import JobRepository, JobStatus
    from helios_kit.run import RunOptions
    from helios_kit.spec import JobSpec
    from helios_kit.stragglers import BackupPolicy

F = TypeVar("F", bound=Callable[..., object])


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
    _check_composition_reachable(spec, source)


def _check_composition_reachable(spec: JobSpec, source: str) -> None:
    """Say where the composition was found, or fail with one line naming every place looked."""
    from helios_kit.errors import SpecError
    from helios_kit.reachability import check_composition

    check = check_composition(spec, source)
    found = check.found
    if found is None:
        raise SpecError(f"config.input: composition {check.input!r} not found; looked in: {check.describe_looked()}")
    others = [item for item in check.looked if item is not found]
    tried = f" (also looked in: {'; '.join(f'{i.location} ({i.note})' for i in others)})" if others else ""
    click.echo(f"  composition: found at {found.location}{tried}")


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


def _open_repository(name: str | None = None) -> JobRepository:
    return open_named_repository(name)


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


def backup_options(command: F) -> F:
    """`--backups/--no-backups`, `--backup-after`, `--backup-factor` (straggler backups), on `helios job run`
    and `helios batch`; :func:`backup_policy` turns their values into the BackupPolicy."""
    command = click.option(
        "--backup-factor",
        type=click.FloatRange(min=1, min_open=True),
        default=1.5,
        show_default=True,
        help="A chunk straggles once it runs longer than this x the median chunk time.",
    )(command)
    command = click.option(
        "--backup-after",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=0.75,
        show_default=True,
        help="Share of chunks done before stragglers get backups.",
    )(command)
    return click.option(
        "--backups/--no-backups",
        "backups",
        default=None,
        help="Backup attempts for straggling chunks (default: on for remote backends, off for local).",
    )(command)


def backup_policy(backups: bool | None, backup_after: float, backup_factor: float) -> BackupPolicy:
    """The BackupPolicy of the :func:`backup_options` flags."""
    from helios_kit.stragglers import BackupPolicy

    return BackupPolicy(enabled=backups, after=backup_after, factor=backup_factor)


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
    default=None,
    help="Extra attempts for a chunk that fails in a retryable way (default: the backend's, 2 local, 5 remote).",
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
    "--verify-seams", is_flag=True, help="Render one extra frame per chunk and check every chunk boundary matches."
)
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
@backup_options
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds a chunk lease lasts unless renewed (default 30, or $HELIOS_LEASE_TTL).",
)
@click.option("--detach", is_flag=True, help="Run in the background; print the job id and return.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, only the summary line.")
@repository_option
@click.option("--run-id", "run_id", default=None, hidden=True, help="Go on with this recorded run (--detach).")
@click.option("--events", default=None, metavar="FILE", help="Write the run's events as JSON lines to FILE.")
@click.option("--webhook", default=None, metavar="URL", help="POST a signed JSON when the run ends.")
@click.option("--webhook-secret", default=None, help="HMAC-SHA256 key of --webhook (or HELIOS_WEBHOOK_SECRET).")
@click.option("--max-cost", type=click.FloatRange(min=0), default=None, metavar="USD", help="Refuse/stop over this.")
@click.option("--pricing", default=None, metavar="FILE", help="Pricing overrides (JSON) for --max-cost.")
@click.option("--price", multiple=True, metavar="FIELD=VALUE", help="One pricing override for --max-cost.")
def run_command(
    source: str,
    backend: str | None,
    adapter: str | None,
    concurrency: int | None,
    retries: int | None,
    retry_delay: float,
    chunk_timeout: float | None,
    store: str | None,
    force: bool,
    chunk_spec: str | None,
    no_merge: bool,
    verify_seams: bool,
    merge_where: str,
    no_leases: bool,
    backups: bool | None,
    backup_after: float,
    backup_factor: float,
    lease_ttl: float | None,
    detach: bool,
    quiet: bool,
    repository: str | None,
    run_id: str | None,
    events: str | None,
    webhook: str | None,
    webhook_secret: str | None,
    max_cost: float | None,
    pricing: str | None,
    price: tuple[str, ...],
    **backend_values: object,
) -> None:
    """Run a JobSpec: render the chunks that are not complete, then merge.

    Re-running a completed job renders nothing; a run that was killed resumes with the chunks that were
    not complete. Backend flags below apply to the backend named in brackets.
    """
    import sys

    from helios_kit.commands.run_extras import ExtraFlags, RunExtras
    from helios_kit.manager import JobManager
    from helios_kit.merging import MergeWhere
    from helios_kit.run import RunOptions

    backend = backend_for_adapter(backend, adapter)
    given = _backend_options(backend, backend_values)
    flags = ExtraFlags(events=events, webhook=webhook, webhook_secret=webhook_secret, max_cost=max_cost)
    extras = RunExtras(flags.model_copy(update={"pricing": pricing, "price": price}), backend)
    options = RunOptions(
        concurrency=concurrency,
        retries=retries,
        retry_delay=retry_delay,
        chunk_timeout=chunk_timeout,
        force=force,
        store=store,
        merge=not no_merge,
        chunks=parse_chunk_ids(chunk_spec) if chunk_spec else None,
        verify_seams=verify_seams,
        merge_where=MergeWhere(merge_where),
        leases=not no_leases,
        lease_ttl=lease_ttl,
        backups=backup_policy(backups, backup_after, backup_factor),
    )
    manager = JobManager(_repository_for_run(detach, repository))
    if detach:
        extras.export_secret()
        _detach(manager, source, backend, given, options, repository, extras.flags.argv())
        return
    extras.check_budget(source, concurrency)
    extras.open_events()
    if not quiet and not is_local(source):
        click.echo(f"Fetching job spec from {source}", err=True)
    status = manager.create(source, backend=backend, backend_options=given, options=options, run_id=run_id)
    final = _run_observed(manager, status, extras, show_progress=not quiet and sys.stderr.isatty(), quiet=quiet)
    if not _print_outcome(manager, final):
        sys.exit(130 if final.state.value == "cancelled" else 1)


def _run_observed(
    manager: JobManager, status: JobStatus, extras: RunExtras, *, show_progress: bool, quiet: bool
) -> JobStatus:
    """Run with the extras' sinks (events file, cost guard: it cancels the run), then let them finish
    (the events file's last line, the webhook)."""
    spec = manager.prepared_spec(status.id)
    sinks = extras.sinks(spec, _selected_chunks(status), lambda: manager.cancel(status.run_id))
    final = _run_until_done(manager, status, show_progress=show_progress, announce=not quiet, extra_sinks=sinks)
    extras.finish(status.id, status.run_id, final.state.value, manager.report(final.id), final.error)
    return final


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


def _repository_for_run(detach: bool, name: str | None = None) -> JobRepository:
    """The job records; when they cannot be opened, a foreground run goes on unrecorded (with a warning)."""
    from helios_kit.errors import StoreError

    try:
        return _open_repository(name)
    except StoreError as error:  # the render does not need the records: run, and say they are not kept
        if detach:
            raise
        from helios_kit.repository import InMemoryJobRepository

        click.echo(f"warning: {error}; this run is not recorded", err=True)
        return InMemoryJobRepository()


def _announce_composition(event: ProgressEvent) -> None:
    if event.kind is EventKind.RESOLVED:
        click.echo(f"composition: {event.output}", err=True)


def _run_until_done(
    manager: JobManager, status: JobStatus, *, show_progress: bool, announce: bool, extra_sinks: list | None = None
) -> JobStatus:
    """Run the created job here, with the progress bar when asked (else, unless quiet, a line saying which
    composition it uses); SIGINT/SIGTERM cancel it cleanly."""
    import signal

    def on_signal(*_: object) -> None:  # no locks in a signal handler: the manager's poller does the rest
        manager.stop_from_signal(status.id)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        extra = tuple(extra_sinks or ())
        if not show_progress:
            manager.sinks = ((_announce_composition,) if announce else ()) + extra
            return manager.run(status.id, status=status)
        from helios_kit.commands.progress import RichProgress

        progress = RichProgress(manager.prepared_spec(status.id), selected=_selected_chunks(status))
        manager.sinks = (progress, *extra)
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


def _detach(
    manager: JobManager,
    source: str,
    backend: str,
    given: dict,
    options: RunOptions,
    repository: str | None,
    extra_argv: list[str],
) -> None:
    """Record the run and start `helios job run` again in its own session, without --detach, on that run."""
    import os
    import subprocess

    status = manager.create(source, backend=backend, backend_options=given, options=options)
    argv = _detach_argv(status, backend, given, options, repository, extra_argv)
    log_dir = manager.repository.path.parent if hasattr(manager.repository, "path") else None
    log_path = (log_dir / f"{status.id}.log") if log_dir else os.devnull
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=dict(os.environ, HELIOS_HOME=str(log_dir)) if log_dir else None,
        )
    _record_owner(manager, status, child.pid)
    click.echo(
        f"{status.id}: started in the background as run {status.run_id} (log: {log_path}); "
        f"`helios job status {status.run_id}`"
    )


def _detach_argv(
    status: JobStatus, backend: str, given: dict, options: RunOptions, repository: str | None, extra_argv: list[str]
) -> list[str]:
    """`helios job run` again, on the recorded run, with the same options (without --detach)."""
    import sys

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
        *(["--retries", str(options.retries)] if options.retries is not None else []),
        "--retry-delay",
        str(options.retry_delay),
        "--run-id",
        status.run_id,
    ]
    if repository:
        argv += ["--repository", repository]
    if options.concurrency:
        argv += ["--concurrency", str(options.concurrency)]
    if options.chunk_timeout:
        argv += ["--chunk-timeout", str(options.chunk_timeout)]
    if options.store:
        argv += ["--store", options.store]
    if options.force:
        argv.append("--force")
    if options.verify_seams:
        argv.append("--verify-seams")
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
    argv += _detach_run_flags(options)
    argv += extra_argv
    for field_name, value in given.items():
        flag = "--" + field_name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    return argv


def _detach_run_flags(options: RunOptions) -> list[str]:
    """The seam, merge, lease and backup settings of `options` as `helios job run` flags."""
    argv = ["--merge", options.merge_where.value]
    if options.verify_seams:
        argv.append("--verify-seams")
    if not options.leases:
        argv.append("--no-leases")
    if options.lease_ttl:
        argv += ["--lease-ttl", str(options.lease_ttl)]
    if options.backups.enabled is not None:
        argv.append("--backups" if options.backups.enabled else "--no-backups")
    return [*argv, "--backup-after", str(options.backups.after), "--backup-factor", str(options.backups.factor)]


def _record_owner(manager: JobManager, status: JobStatus, pid: int) -> None:
    """The pending run's owner is the detached process: if it dies before it starts, the run is interrupted."""
    from helios_kit.repository import this_host

    recorded = manager.repository.get(status.run_id)
    if recorded.state.value == "pending" and recorded.pid is None:  # the child has not taken it over yet
        recorded.pid, recorded.host = pid, this_host()
        manager._save(recorded)


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
@click.argument("key", metavar="JOB_ID|RUN_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@repository_option
def status_command(key: str, as_json: bool, repository: str | None) -> None:
    """Show a run (a job id: its latest run): state, progress, times, chunks and result."""
    from helios_kit.manager import JobManager

    status = JobManager(_open_repository(repository)).get(key)
    if as_json:
        click.echo(status.model_dump_json(by_alias=True, indent=2))
        return
    click.echo(
        f"{status.id}: {status.state.value}, {status.progress:g}% "
        f"({status.completed_chunks}/{status.total_chunks} chunks), updated {_age(status.updated_at)}"
    )
    click.echo(f"  run: {status.run_id}  {_times(status)}")
    if status.state.value == "interrupted":
        click.echo(f"  owner gone: pid {status.pid} on {status.host or 'this host'} (resume: `helios job run` again)")
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


def _times(status: JobStatus) -> str:
    """`created …, started …, finished …` (the ones known) and the duration from start to finish."""
    parts = [f"created {_age(status.created_at)}"]
    if status.started_at:
        parts.append(f"started {_age(status.started_at)}")
    if status.finished_at:
        parts.append(f"finished {_age(status.finished_at)}")
        if status.started_at:
            parts.append(f"took {(status.finished_at - status.started_at).total_seconds():.1f} s")
    return ", ".join(parts)


@job_group.command("list")
@click.option("--job", "job_id", default=None, help="Only the runs of this job.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Newest runs (0: all).")
@repository_option
def list_command(job_id: str | None, as_json: bool, limit: int, repository: str | None) -> None:
    """List runs, newest first (each `helios job run` is one run of its job)."""
    from rich.console import Console
    from rich.table import Table

    from helios_kit.manager import JobManager

    manager = JobManager(_open_repository(repository))
    runs = manager.runs(job_id) if job_id else manager.recent(limit) if limit else manager.list()
    runs = runs[:limit] if limit else runs
    if as_json:
        click.echo("[" + ",".join(run.model_dump_json(by_alias=True) for run in runs) + "]")
        return
    table = Table(title="helios runs")
    for column in ("job", "run", "state", "progress", "chunks", "created", "took", "output"):
        table.add_column(column)
    for run in runs:
        output = run.result.output if run.result else run.output
        took = ""
        if run.started_at and run.finished_at:
            took = f"{(run.finished_at - run.started_at).total_seconds():.1f} s"
        table.add_row(
            run.id,
            run.run_id,
            run.state.value,
            f"{run.progress:g}%",
            f"{run.completed_chunks}/{run.total_chunks}",
            _age(run.created_at),
            took,
            output,
        )
    Console(width=200).print(table)


@job_group.command("cancel")
@click.argument("key", metavar="JOB_ID|RUN_ID")
@click.option("--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for the job to stop.")
@repository_option
def cancel_command(key: str, wait_s: float, repository: str | None) -> None:
    """Stop a running run (a job id: its latest run) from any terminal; it records `cancelled`."""
    import time

    from helios_kit.manager import JobManager

    manager = JobManager(_open_repository(repository))
    status = manager.cancel(key)
    if status.state.finished:
        click.echo(f"{key}: {status.state.value}")
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = manager.get(status.run_id)
        if status.state.finished or status.state.value == "interrupted":
            break
        time.sleep(0.2)
    click.echo(f"{key}: cancel requested ({status.state.value})")


def _add_estimate_command() -> None:
    """`helios job estimate` lives in commands/estimate.py (with the --max-cost guard)."""
    from helios_kit.commands.estimate import estimate_command

    job_group.add_command(estimate_command)


_add_estimate_command()
