"""Bad input reaching a worker ends in one line and the right retry decision, never a traceback: deeply
nested JSON (job file or request body), permanent loader faults (not retryable, from `error.retryable`),
and a spec URL that drips its body past the deadline (retryable)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from fakes.loopback import LoopbackHTTPServer
from fakes.renders import bytes_render

from helios_kit.loaders import LoaderOptions
from helios_kit.planner import plan_job
from helios_kit.spec import MAX_JSON_DEPTH, RenderConfig, dumps
from helios_kit.worker import WorkerRuntime
from helios_kit.worker.server import ServerConfig, create_app

DEEP = "[" * 100_000
RELEASE = threading.Event()


def make_job(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text("<p>hi</p>")
    spec = plan_job(RenderConfig(input="index.html", width=160, height=120, frame_count=4), concurrency=2)
    (folder / "job.json").write_text(dumps(spec))
    return folder / "job.json"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        status = 200
        if self.path == "/deep.json":
            body = DEEP.encode()
        elif self.path.startswith("/status/"):
            status, body = int(self.path.rsplit("/", 1)[1]), b""
        else:  # /drip.json: headers, then one byte at a time until the test ends
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                while not RELEASE.wait(0.25):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(LoopbackHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    RELEASE.clear()
    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    RELEASE.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(tmp_path: Path) -> WorkerRuntime:
    return WorkerRuntime(tmp_path / "ws", render=bytes_render)


@pytest.fixture
def impatient_worker(tmp_path: Path) -> WorkerRuntime:
    """A worker whose fetches give up after 1 s (only for the dripping URL: a loaded machine can take longer
    than that to answer any loopback request)."""
    return WorkerRuntime(tmp_path / "ws", render=bytes_render, loader_options=LoaderOptions(timeout=1))


def test_a_deeply_nested_job_file_is_a_permanent_one_line_failure(tmp_path: Path, worker) -> None:
    job = tmp_path / "job.json"
    job.write_text(DEEP)
    result = worker.run(str(job), 0, store=str(tmp_path / "store"))
    assert not result.ok and not result.retryable and result.exit_code == 2
    assert result.stderr == f"{job}: JSON nested more than {MAX_JSON_DEPTH} levels deep"


def test_a_deeply_nested_job_url_is_not_retried(base, tmp_path: Path, worker) -> None:
    result = worker.run(f"{base}/deep.json", 0, store=str(tmp_path / "store"))
    assert not result.ok and not result.retryable
    assert "JSON nested more than" in result.stderr and "\n" not in result.stderr


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (429, True), (502, True)])
def test_the_loaders_retryable_flag_decides(base, tmp_path: Path, worker, status, retryable) -> None:
    result = worker.run(f"{base}/status/{status}", 0, store=str(tmp_path / "store"))
    assert not result.ok and result.retryable is retryable and f"HTTP {status}" in result.stderr


def test_a_dripping_spec_url_times_out_and_may_be_retried(base, tmp_path: Path, impatient_worker) -> None:
    result = impatient_worker.run(f"{base}/drip.json", 0, store=str(tmp_path / "store"))
    assert not result.ok and result.retryable
    assert result.stderr == f"timed out after 1 s fetching {base}/drip.json"


def test_the_runtime_source_has_no_message_parsing() -> None:
    import helios_kit.worker.runtime as runtime

    assert not hasattr(runtime, "_NOT_RETRYABLE_LOADER") and not hasattr(runtime, "_client_http_error")


# --- the HTTP worker ---------------------------------------------------------------------------------


def post(app, body: bytes) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post("/", content=body, headers={"Content-Type": "application/json"})

    return asyncio.run(call())


def test_server_answers_a_deep_body_with_400_and_one_line(worker) -> None:
    response = post(create_app(worker, ServerConfig()), b"[" * 60_000)
    assert response.status_code == 400
    assert response.json() == {"error": f"request body: JSON nested more than {MAX_JSON_DEPTH} levels deep"}


def test_server_answers_a_deep_job_file_with_a_client_status_not_503(tmp_path: Path, worker) -> None:
    job = tmp_path / "job.json"
    job.write_text(DEEP)
    body = f'{{"jobUrl": "{job}", "chunkId": 0, "store": "{tmp_path / "store"}"}}'.encode()
    response = post(create_app(worker, ServerConfig()), body)
    assert response.status_code == 422
    assert not response.json()["retryable"] and "nested more than" in response.json()["stderr"]


def test_server_still_renders_a_good_request(tmp_path: Path, worker) -> None:
    job = make_job(tmp_path / "job")
    body = f'{{"jobUrl": "{job}", "chunkId": 1}}'.encode()
    response = post(create_app(worker, ServerConfig()), body)
    assert response.status_code == 200, response.text
    assert (tmp_path / "job" / "chunks").is_dir()
