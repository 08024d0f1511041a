"""The Cloud Run worker server: Starlette on uvicorn, a thin HTTP shell around :class:`WorkerRuntime`.

* `POST /` with `{"jobUrl", "chunkId", "store"?, "force"?}` runs that chunk and answers the
  :class:`WorkerResult` as JSON (camelCase): 200 when it succeeded (or was already complete), 422 when it
  failed for good (`retryable: false`), 503 when a retry may help.
* `GET /healthz` answers `{"ok": true}`.
* 400 for a malformed body (the message names the field), 413 above the size limit.
* ID-token verification (`HELIOS_VERIFY_AUDIENCE=<audience>`, normally the service URL): requests without
  `Authorization: Bearer <token>` get 401, a token that fails google-auth's `id_token.verify_token` (bad
  signature, expired, other audience) gets 403. `HELIOS_CERTS_URL` overrides Google's certificates URL
  (tests use a local one). Cloud Run's own IAM check normally does this; this is defence in depth and what
  makes the server safe to expose without it.
* A caller that disconnects (client timeout, cancelled job) cancels its render.
* Chunks run one at a time per instance (`HELIOS_WORKER_CONCURRENCY`, default 1): a render uses the whole
  CPU; extra requests wait their turn (Cloud Run's `--concurrency 1` avoids sending them at all).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from helios_kit.errors import SpecError
from helios_kit.protocol import WorkerRequest, WorkerResult
from helios_kit.spec import format_validation_error, parse_json_object
from helios_kit.worker.runtime import WorkerRuntime, handle_request

log = logging.getLogger("helios.worker.server")

DEFAULT_MAX_BODY = 64 * 1024
DISCONNECT_POLL_S = 0.5
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass
class ServerConfig:
    """How the server behaves; :meth:`from_env` reads the `HELIOS_*` variables."""

    max_body: int = DEFAULT_MAX_BODY
    concurrency: int = 1
    verify_audience: str | None = None
    certs_url: str | None = None
    default_store: str | None = None
    workspace_dir: str | None = None
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
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def verify_bearer(header: str | None, audience: str, certs_url: str | None) -> tuple[int, str] | None:
    """None when the `Authorization` header carries a valid ID token for `audience`, else (status, reason)."""
    if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
        return 401, "missing bearer token (Authorization: Bearer <Google ID token>)"
    import google.auth.transport.requests
    from google.oauth2 import id_token

    try:
        id_token.verify_token(
            header[7:].strip(),
            google.auth.transport.requests.Request(),
            audience=audience,
            certs_url=certs_url or GOOGLE_CERTS_URL,
        )
    except Exception as error:  # google-auth raises ValueError / GoogleAuthError / TransportError
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return 403, f"invalid ID token: {first}"
    return None


def create_app(runtime: WorkerRuntime | None = None, config: ServerConfig | None = None) -> Starlette:
    """The ASGI app. `runtime` defaults to a WorkerRuntime in `config.workspace_dir` with the real renderer."""
    config = config or ServerConfig.from_env()
    runtime = runtime or WorkerRuntime(config.workspace_dir)
    slots = asyncio.Semaphore(config.concurrency)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def run_chunk(request: Request) -> JSONResponse:
        if config.verify_audience:
            problem = await run_in_threadpool(
                verify_bearer, request.headers.get("authorization"), config.verify_audience, config.certs_url
            )
            if problem is not None:
                return _error(*problem)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body:
            return _error(413, f"request body over {config.max_body} bytes")
        body = bytearray()
        async for block in request.stream():
            body += block
            if len(body) > config.max_body:
                return _error(413, f"request body over {config.max_body} bytes")
        try:
            data = parse_json_object(bytes(body), "request body")
        except SpecError as error:  # invalid, not an object, or nested too deeply: the caller's to fix
            return _error(400, str(error))
        try:
            work = WorkerRequest.model_validate(data)
        except ValidationError as error:
            return _error(400, format_validation_error(error))
        async with slots:
            result = await _run_until_disconnect(request, runtime, work, config.default_store)
        status = 200 if result.ok else (503 if result.retryable else 422)
        return JSONResponse(result.model_dump(mode="json", by_alias=True), status_code=status)

    return Starlette(routes=[Route("/", run_chunk, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])])


async def _run_until_disconnect(
    request: Request, runtime: WorkerRuntime, work: WorkerRequest, default_store: str | None
) -> WorkerResult:
    """Run the chunk in a thread; if the caller goes away (client timeout, cancelled job), stop the render."""
    cancel = threading.Event()
    task = asyncio.ensure_future(
        run_in_threadpool(
            handle_request, runtime, work.model_copy(update={"store": work.store or default_store}), cancel=cancel
        )
    )
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            log.info("caller of chunk %s went away: cancelling the render", work.chunk_id)
            cancel.set()
    return task.result()


def serve(host: str = "127.0.0.1", port: int = 8080, config: ServerConfig | None = None) -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    config = config or ServerConfig.from_env()
    log.warning(
        "helios worker listening on http://%s:%d (verify audience: %s, concurrency %d)",
        host,
        port,
        config.verify_audience or "off",
        config.concurrency,
    )
    uvicorn.run(create_app(config=config), host=host, port=port, log_level="warning", access_log=False)
