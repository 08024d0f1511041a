"""The dashboard's Starlette app: the page, the JSON API, server-sent events, media, and cancel.

Routes: `/` and `/runs/<id>` (the page; a job id stands for its latest run), `/static/*`, `GET /api/jobs`,
`GET /api/runs/<id>`, `GET /api/events[?run=<id>]` (SSE: an event each time what the page shows changes),
`POST /api/runs/<id>/cancel` (same origin only: the page's token in `X-Helios-Token`, and an `Origin`, when
sent, equal to the host), `/runs/<id>/chunks/<n>/thumb.jpg` and `/runs/<id>/preview.mp4` (HTTP ranges).
Runs are read through the JobManager, so an owner that is gone shows `interrupted` here too.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from helios_kit.dashboard.media import MediaCache
from helios_kit.dashboard.views import detail, jobs_view
from helios_kit.errors import HeliosError, JobNotFoundError
from helios_kit.manager import JobManager
from helios_kit.repository import ChunkStatus, JobStatus

STATIC = Path(__file__).parent / "static"
TOKEN_HEADER = "x-helios-token"
#: Seconds between looks at the repository while a client listens for events.
EVENT_POLL_S = 0.5
#: Runs the list shows (the newest; `?limit=` asks for another number).
LIST_LIMIT = 200
#: Seconds between keep-alive comments on a quiet event stream.
KEEPALIVE_S = 15.0


#: Pending chunks whose lease is looked for per look at a run (the next ones show `pending`).
LEASE_CHECKS = 256


def _lease_checker() -> Callable[[ChunkStatus], bool]:
    """Whether a live lease (helios_kit.leases) sits beside a pending chunk's output (local stores only;
    remote ones are not asked), for the first LEASE_CHECKS pending chunks of one look."""
    from helios_kit.composition.locations import is_local, local_path
    from helios_kit.leases import held_at

    left = LEASE_CHECKS

    def leased(chunk: ChunkStatus) -> bool:
        nonlocal left
        where = chunk.output_file
        if not where or left <= 0 or not is_local(where):
            return False
        left -= 1
        return held_at(str(local_path(where)))

    return leased


class Dashboard:
    """State shared by the routes: the manager (and its repository), the cancel token, the media cache."""

    def __init__(self, manager: JobManager, token: str | None = None, media: MediaCache | None = None) -> None:
        self.manager = manager
        self.token = token or secrets.token_urlsafe(24)
        self.media = media or MediaCache()

    def jobs_json(self, limit: int = LIST_LIMIT) -> str:
        return jobs_view(self.manager.recent(limit)).model_dump_json(by_alias=True)

    def run_json(self, key: str) -> str:
        status = self.manager.get(key)
        try:
            flag = self.manager.repository.cancel_requested(status.run_id)
        except HeliosError:
            flag = False
        return detail(status, cancel_requested=flag, leased=_lease_checker()).model_dump_json(by_alias=True)

    def run(self, key: str) -> JobStatus:
        return self.manager.get(key)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _page(request: Request) -> Response:
    board: Dashboard = request.app.state.board
    html = (STATIC / "index.html").read_text().replace("{{TOKEN}}", board.token)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _limit(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("limit", LIST_LIMIT)))
    except ValueError:
        return LIST_LIMIT


async def _api_jobs(request: Request) -> Response:
    board: Dashboard = request.app.state.board
    body = await to_thread.run_sync(board.jobs_json, _limit(request))
    return Response(body, media_type="application/json")


async def _api_run(request: Request) -> Response:
    board: Dashboard = request.app.state.board
    try:
        body = await to_thread.run_sync(board.run_json, request.path_params["key"])
    except JobNotFoundError as error:
        return _error(404, str(error))
    return Response(body, media_type="application/json")


async def _events(request: Request) -> Response:
    """SSE: `event: jobs` (or `event: run` with `?run=<id>`) whenever the JSON changes; keep-alive comments."""
    board: Dashboard = request.app.state.board
    key = request.query_params.get("run")
    kind = "run" if key else "jobs"

    produce = functools.partial(board.run_json, key) if key else functools.partial(board.jobs_json, _limit(request))

    async def stream() -> AsyncIterator[str]:
        last, quiet = None, 0.0
        while not await request.is_disconnected():
            started = time.monotonic()
            try:
                body = await to_thread.run_sync(produce)
            except HeliosError as error:
                body = json.dumps({"error": str(error)})
            if body != last:
                last, quiet = body, 0.0
                yield f"event: {kind}\ndata: {body}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            pause = max(EVENT_POLL_S, 2 * (time.monotonic() - started))  # a slow repository is asked less often
            await asyncio.sleep(pause)
            quiet += pause

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _same_origin(request: Request, token: str) -> str | None:
    """Why a state-changing request is refused (None when it is the page's own)."""
    given = request.headers.get(TOKEN_HEADER, "")
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return "missing or wrong X-Helios-Token: cancel from the dashboard page"
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        return f"cross-origin request from {origin} refused"
    if request.headers.get("sec-fetch-site") not in (None, "same-origin"):
        return "cross-site request refused"
    return None


async def _cancel(request: Request) -> Response:
    board: Dashboard = request.app.state.board
    refused = _same_origin(request, board.token)
    if refused:
        return _error(403, refused)
    try:
        status = await to_thread.run_sync(board.manager.cancel, request.path_params["key"])
    except JobNotFoundError as error:
        return _error(404, str(error))
    return JSONResponse({"runId": status.run_id, "state": status.state.value})


async def _thumbnail(request: Request) -> Response:
    board: Dashboard = request.app.state.board
    try:
        status = await to_thread.run_sync(board.run, request.path_params["key"])
        chunk = next((c for c in status.chunks if c.id == request.path_params["chunk"]), None)
        if chunk is None or not chunk.output_file or not chunk.state.done:
            return _error(404, f"chunk {request.path_params['chunk']}: no finished output")
        path = await to_thread.run_sync(board.media.thumbnail, chunk.output_file)
    except HeliosError as error:
        return _error(404, str(error))
    return FileResponse(path, media_type="image/jpeg")


async def _preview(request: Request) -> Response:
    """The merged output, with HTTP range support (a <video> seeks through it)."""
    board: Dashboard = request.app.state.board
    try:
        status = await to_thread.run_sync(board.run, request.path_params["key"])
        if status.result is None:
            return _error(404, f"run {status.run_id}: no merged output yet")
        path = await to_thread.run_sync(board.media.local_file, status.result.output)
    except HeliosError as error:
        return _error(404, str(error))
    return FileResponse(path, media_type="video/mp4")


def create_app(manager: JobManager, *, token: str | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard over `manager`'s repository; `allowed_hosts` guards against DNS rebinding."""
    routes = [
        Route("/", _page),
        Route("/runs/{key}", _page),
        Route("/api/jobs", _api_jobs),
        Route("/api/runs/{key}", _api_run),
        Route("/api/runs/{key}/cancel", _cancel, methods=["POST"]),
        Route("/api/events", _events),
        Route("/runs/{key}/chunks/{chunk:int}/thumb.jpg", _thumbnail),
        Route("/runs/{key}/preview.mp4", _preview),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1"]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])
    app.state.board = Dashboard(manager, token)
    return app
