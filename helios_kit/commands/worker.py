"""`helios worker ...`: run one chunk as a stateless worker would, or serve chunks over HTTP (Cloud Run)."""

from __future__ import annotations

import os
import sys

import click


@click.group("worker")
def worker_group() -> None:
    """Run chunks as a stateless worker (the same code Lambda and Cloud Run run)."""


@worker_group.command("run")
@click.argument("job_url")
@click.argument("chunk_id", type=click.IntRange(min=0))
@click.option(
    "--store",
    default=None,
    help="Artifact store (folder or fsspec URL). Default: the job's folder (local or s3://... job).",
)
@click.option("--force", is_flag=True, help="Render even when the store already holds the chunk.")
@click.option("--workspace", type=click.Path(file_okay=False), default=None, help="Temp workspace root.")
@click.option("--json", "as_json", is_flag=True, help="Print the WorkerResult as JSON.")
def run_command(
    job_url: str, chunk_id: int, store: str | None, force: bool, workspace: str | None, as_json: bool
) -> None:
    """Render chunk CHUNK_ID of the job at JOB_URL (path, http(s):// or s3:// URL) and commit it."""
    from helios_kit.render.netguard import enable_for_workers
    from helios_kit.worker.runtime import WorkerRuntime

    enable_for_workers()  # as on Lambda and Cloud Run: the page cannot reach the metadata service or loopback
    result = WorkerRuntime(workspace).run(job_url, chunk_id, store=store, force=force)
    if as_json:
        click.echo(result.model_dump_json(by_alias=True, indent=2))
    else:
        if result.stdout:
            click.echo(result.stdout)
        if result.stderr:
            click.echo(f"error: {result.stderr}", err=True)
    sys.exit(result.exit_code)


@worker_group.command("serve")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=lambda: int(os.environ.get("PORT", "8080")),
    show_default="$PORT or 8080",
    help="Port to listen on.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface (0.0.0.0 in a container).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks run at once per instance (default $HELIOS_WORKER_CONCURRENCY or 1).",
)
@click.option(
    "--audience",
    "--verify-audience",
    "audience",
    default=None,
    help="Require Google ID tokens for this audience, normally the service URL (default $HELIOS_VERIFY_AUDIENCE).",
)
@click.option("--no-auth", is_flag=True, help="Accept requests without an ID token (announced at start).")
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="PREFIX",
    help="Job URL / store prefix this worker may touch (repeatable; default $HELIOS_ALLOW, else remote URLs "
    "only: file:// and loopback need a prefix). Anything else gets 403.",
)
def serve_command(
    port: int, host: str, concurrency: int | None, audience: str | None, no_auth: bool, allow: tuple[str, ...]
) -> None:
    """Serve `POST /` {"jobUrl","chunkId","store"} and `GET /healthz` (the Cloud Run worker)."""
    try:
        from helios_kit.worker.server import ServerConfig, serve
    except ImportError as error:
        raise click.ClickException(f"the worker server needs: pip install 'helios-kit[server]' ({error})") from None
    config = ServerConfig.from_env()
    if concurrency is not None:
        config.concurrency = concurrency
    if audience:
        config.verify_audience = audience
    config.no_auth = no_auth
    if allow:
        config.allow.prefixes = list(allow)
    serve(host=host, port=port, config=config)
