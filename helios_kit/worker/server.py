"""The Cloud Run worker server: Starlette on uvicorn, a thin HTTP shell around :class:`WorkerRuntime`.

* `POST /` with `{"jobUrl", "chunkId", "store"?, "force"?}` runs that chunk and answers the
  :class:`WorkerResult` as JSON (camelCase): 200 when it succeeded (or was already complete), 422 when it
  failed for good (`retryable: false`), 503 when a retry may help.
* `GET /healthz` answers `{"ok": true}`.
* 400 for a malformed body (the message names the field), 413 above the size limit.
* ID tokens (:mod:`helios_kit.worker.auth`): with an audience (`--audience`, `HELIOS_VERIFY_AUDIENCE`,
  normally the service URL) a request without `Authorization: Bearer <token>` gets 401, a token that does
  not verify (signature, expiry, issuer, audience) 403. `helios worker serve` refuses to start without an
  audience unless given `--no-auth`, which it announces.
* Allowlist (:mod:`helios_kit.worker.allow`): a job URL or store the worker may not touch gets 403 before
  anything is fetched.
* A caller that disconnects (client timeout, cancelled job) cancels its render at once, the spec fetch and
  the wait for a slot included: no slot is held for a caller that has gone.
* Chunks run one at a time per instance (`HELIOS_WORKER_CONCURRENCY`, default 1): a render uses the whole
  CPU; extra requests wait their turn (Cloud Run's `--concurrency 1` avoids sending them at all).

:func:`create_app` with a default :class:`ServerConfig` (in-process embeddings, tests) allows every URL;
:meth:`ServerConfig.from_env`, which the CLI uses, starts from the restrictive policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from helios_kit.errors import HeliosError, SpecError
from helios_kit.protocol import WorkerRequest, WorkerResult
from helios_kit.spec import format_validation_error, parse_json_object
from helios_kit.worker.allow import AllowPolicy
from helios_kit.worker.auth import TokenVerifier
from helios_kit.worker.runtime import WorkerRuntime, handle_request

log = logging.getLogger("helios.worker.server")

DEFAULT_MAX_BODY = 64 * 1024
#: Status answered to a caller that has gone (nobody reads it; nginx's "client closed request").
CLIENT_GONE = 499


class ServerConfigError(HeliosError):
    """`helios worker serve` settings that must not start a server (no authentication setting)."""


@dataclass
class ServerConfig:
    """How the server behaves; :meth:`from_env` reads the `HELIOS_*` variables."""

    max_body: int = DEFAULT_MAX_BODY
    concurrency: int = 1
    verify_audience: str | None = None
    certs_url: str | None = None
    default_store: str | None = None
    workspace_dir: str | None = None
    allow: AllowPolicy = field(default_factory=lambda: AllowPolicy(open=True))
    no_auth: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> ServerConfig:
        env = os.environ
        return cls(
            max_body=int(env.get("HELIOS_MAX_BODY", DEFAULT_MAX_BODY)),
            concurrency=max(1, int(env.get("HELIOS_WORKER_CONCURRENCY", "1"))),
            verify_audience=env.get("HELIOS_VERIFY_AUDIENCE") or None,
            certs_url=env.get("HELIOS_CERTS_URL") or None,
            default_store=env.get("HELIOS_STORE") or None,
            workspace_dir=env.get("HELIOS_WORKSPACE") or None,
            allow=AllowPolicy.from_env(),
        )

    def check_startable(self) -> None:
        """ServerConfigError unless authentication is configured or explicitly switched off."""
        if not self.verify_audience and not self.no_auth:
            raise ServerConfigError(
                "helios worker serve: no ID-token audience: give --audience URL (or HELIOS_VERIFY_AUDIENCE), "
                "or --no-auth to accept unauthenticated requests"
            )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(runtime: WorkerRuntime | None = None, config: ServerConfig | None = None) -> Starlette:
    """The ASGI app. `runtime` defaults to a WorkerRuntime in `config.workspace_dir` with the real renderer."""
    config = config or ServerConfig.from_env()
    runtime = runtime or WorkerRuntime(config.workspace_dir)
    if not config.allow.open and hasattr(runtime, "location_check"):
        runtime.location_check = config.allow.enforce  # a composition named by absolute URL
    slots = asyncio.Semaphore(config.concurrency)
    verifier = TokenVerifier(config.verify_audience, config.certs_url) if config.verify_audience else None

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def run_chunk(request: Request) -> JSONResponse:
        if verifier is not None:
            problem = await run_in_threadpool(verifier.check, request.headers.get("authorization"))
            if problem is not None:
                return _error(problem.status, problem.message)
        work = await _read_request(request, config.max_body)
        if isinstance(work, JSONResponse):
            return work
        store = work.store or config.default_store
        for what, url in (("job", work.job_url), ("store", work.store)):
            refusal = config.allow.refusal(what, url) if url else None
            if refusal is not None:
                log.warning("refused chunk %s: %s", work.chunk_id, refusal)
                return _error(403, refusal)
        result = await _run_for_caller(
            request,
            slots,
            lambda cancel: handle_request(runtime, work.model_copy(update={"store": store}), cancel=cancel),
        )
        if result is None:
            return _error(CLIENT_GONE, "caller went away")
        status = 200 if result.ok else (503 if result.retryable else 422)
        return JSONResponse(result.model_dump(mode="json", by_alias=True), status_code=status)

    return Starlette(routes=[Route("/", run_chunk, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])])


async def _read_request(request: Request, max_body: int) -> WorkerRequest | JSONResponse:
    """The WorkerRequest in the body, or the 400/413 answer saying what is wrong with it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        return _error(413, f"request body over {max_body} bytes")
    body = bytearray()
    async for block in request.stream():
        body += block
        if len(body) > max_body:
            return _error(413, f"request body over {max_body} bytes")
    try:
        data = parse_json_object(bytes(body), "request body")
    except SpecError as error:  # invalid, not an object, or nested too deeply: the caller's to fix
        return _error(400, str(error))
    try:
        return WorkerRequest.model_validate(data)
    except ValidationError as error:
        return _error(400, format_validation_error(error))


async def _until_disconnect(request: Request) -> None:
    """Return when the caller has gone (the body is read: the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _run_for_caller(
    request: Request, slots: asyncio.Semaphore, work: Callable[[threading.Event], WorkerResult]
) -> WorkerResult | None:
    """Wait for a slot and run `work` in a thread, both only while the caller is there: a disconnect gives
    up the wait, or sets the render's cancel event (the spec fetch and the render stop); None if it went."""
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        acquire = asyncio.ensure_future(slots.acquire())
        await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            log.info("caller went away while waiting for a slot")
            return None
        try:
            if gone.done():
                return None
            cancel = threading.Event()
            task = asyncio.ensure_future(run_in_threadpool(work, cancel))
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                log.info("caller went away: cancelling its render")
                cancel.set()
                await task  # stops at the next frame (or at once while fetching the spec)
                return None
            return task.result()
        finally:
            slots.release()
    finally:
        gone.cancel()


def serve(host: str = "127.0.0.1", port: int = 8080, config: ServerConfig | None = None) -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    from helios_kit.redact import install as install_redaction
    from helios_kit.render.netguard import enable_for_workers

    config = config or ServerConfig.from_env()
    config.check_startable()
    install_redaction()
    enable_for_workers()  # pages it renders cannot reach the metadata service or its loopback
    if not config.verify_audience:
        log.warning("warning: authentication is OFF (--no-auth): anyone who can reach this port can render")
    log.warning(
        "helios worker listening on http://%s:%d (ID-token audience: %s; allowed: %s; concurrency %d)",
        host,
        port,
        config.verify_audience or "none, --no-auth",
        config.allow.describe(),
        config.concurrency,
    )
    uvicorn.run(create_app(config=config), host=host, port=port, log_level="warning", access_log=False)
