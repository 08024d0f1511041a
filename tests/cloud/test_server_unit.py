"""The worker server in-process (ASGI transport): one chunk at a time per instance unless configured; and the
cloudrun backend's handling of 429 (retried with backoff) against a loopback stub."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from fakes.cloudjobs import make_spec
from fakes.loopback import LoopbackHTTPServer
from fakes.waiting import wait_for

from helios_kit.backends.base import ChunkContext, WorkerResult
from helios_kit.worker.server import ServerConfig, create_app


class CountingRuntime:
    """Counts the renders in flight. With `together` > 1, each render waits (an event, not a timer) until
    that many are in flight at once, which only a server running them concurrently can reach."""

    def __init__(self, together: int) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.barrier = threading.Barrier(together, timeout=120) if together > 1 else None

    def run(self, job_url, chunk_id, store=None, force=False, **_):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            else:
                time.sleep(0.05)  # gives a (wrongly) concurrent server the chance to start another
        finally:
            with self.lock:
                self.in_flight -= 1
        return WorkerResult(chunk_id=chunk_id, status="ok")


async def _post_many(app, count: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        return await asyncio.gather(
            *(client.post("/", json={"jobUrl": "s3://b/j.json", "chunkId": i}) for i in range(count))
        )


@pytest.mark.parametrize("concurrency", [1, 3])
def test_one_chunk_at_a_time_unless_configured(concurrency: int) -> None:
    runtime = CountingRuntime(together=concurrency)
    app = create_app(runtime, ServerConfig(concurrency=concurrency))
    responses = asyncio.run(_post_many(app, 3))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert runtime.most == concurrency


def test_status_codes_follow_the_result() -> None:
    class Runtime:
        def run(self, job_url, chunk_id, store=None, force=False, **_):
            return WorkerResult.failed(chunk_id, "x", retryable=chunk_id == 1)

    app = create_app(Runtime(), ServerConfig())
    responses = asyncio.run(_post_many(app, 2))
    assert [r.status_code for r in responses] == [422, 503]
    assert responses[1].json()["retryable"] is True


class _Stub(BaseHTTPRequestHandler):
    answers: list[int] = []
    calls = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.answers.pop(0) if self.answers else 200
        payload = {"error": "no free instance"} if status == 429 else {"chunkId": body["chunkId"], "status": "ok"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub():
    server = LoopbackHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stub.calls = 0
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_cloudrun_retries_429_then_reports_retryable(stub) -> None:
    from helios_cloudrun.backend import CloudRunBackend, CloudRunOptions

    _, url = stub
    spec = make_spec()
    context = ChunkContext(job_url="s3://b/j.json", job_dir=".", store_url="s3://b/out")
    _Stub.answers = [429, 429]
    with CloudRunBackend(CloudRunOptions(service_url=url, auth=False, throttle_attempts=4)) as backend:
        result = backend.run_chunk(spec, spec.chunks[0], context, cancel=threading.Event())
        assert result.ok and _Stub.calls == 3
        _Stub.answers, _Stub.calls = [429] * 5, 0
        result = backend.run_chunk(spec, spec.chunks[1], context, cancel=threading.Event())
    assert not result.ok and result.retryable and "HTTP 429" in result.stderr and _Stub.calls == 4


def test_caller_disconnect_cancels_the_render() -> None:
    import socket

    import uvicorn

    cancelled = threading.Event()

    class CancelAware:
        def run(self, job_url, chunk_id, store=None, force=False, *, cancel: threading.Event, **_):
            if cancel.wait(60):
                cancelled.set()
                return WorkerResult.cancelled(chunk_id)
            return WorkerResult(chunk_id=chunk_id, status="ok")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(CancelAware(), ServerConfig()), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 60, "the server to start")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"http://127.0.0.1:{port}/", json={"jobUrl": "s3://b/j.json", "chunkId": 0}, timeout=0.5)
        assert cancelled.wait(60), "the render was not cancelled when the caller went away"
    finally:
        server.should_exit = True
        thread.join(10)
