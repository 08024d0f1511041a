"""The hardened HTTP worker (`helios worker serve`): ID tokens verified by default (google-auth against test
certificates on a loopback server, never the internet), no start without an auth setting unless --no-auth
(announced), allowlisted job URLs and stores (403 otherwise; file:// and loopback only when allowed), and a
caller's disconnect cancelling its render at once, spec fetch included (a spec server dripping forever)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.gce_metadata import FakeMetadataServer, SigningKey
from fakes.loopback import LoopbackHTTPServer
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit.loaders import LoaderOptions
from helios_kit.protocol import WorkerResult
from helios_kit.worker.allow import AllowPolicy, normalize
from helios_kit.worker.runtime import WorkerRuntime
from helios_kit.worker.server import ServerConfig, create_app

HELIOS = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"
AUDIENCE = "https://helios-worker.example.run.app"


class Recorder:
    """A runtime stand-in that records what it was asked to run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def run(self, job_url: str, chunk_id: int, store: str | None = None, force: bool = False, **_: Any):
        self.calls.append((job_url, store))
        return WorkerResult(chunk_id=chunk_id, status="ok")


def post(app: Any, body: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post("/", json=body, headers=headers or {})

    return asyncio.run(go())


@pytest.fixture
def certs() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer().start()
    try:
        yield server
    finally:
        server.stop()


# -- ID tokens ---------------------------------------------------------------------------------------------


def test_id_tokens_are_verified(certs: FakeMetadataServer) -> None:
    runtime = Recorder()
    app = create_app(runtime, ServerConfig(verify_audience=AUDIENCE, certs_url=certs.certs_url))
    body = {"jobUrl": "s3://renders/jobs/job.json", "chunkId": 0}

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert post(app, body).status_code == 401
    assert post(app, body, {"Authorization": "Basic abc"}).status_code == 401
    wrong_audience = post(app, body, bearer(certs.key.sign("https://other.example")))
    assert wrong_audience.status_code == 403 and "audience" in wrong_audience.json()["error"].lower()
    expired = post(app, body, bearer(certs.key.sign(AUDIENCE, lifetime=-3600, iat=int(time.time()) - 7200)))
    assert expired.status_code == 403
    forged = post(app, body, bearer(SigningKey("fake-key-1").sign(AUDIENCE)))  # same kid, another key
    assert forged.status_code == 403
    other_issuer = post(app, body, bearer(certs.key.sign(AUDIENCE, iss="https://evil.example")))
    assert other_issuer.status_code == 403
    assert runtime.calls == []
    good = post(app, body, bearer(certs.key.sign(AUDIENCE)))
    assert good.status_code == 200, good.text
    assert runtime.calls == [("s3://renders/jobs/job.json", None)]


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [HELIOS, "worker", "serve", "--host", "127.0.0.1", "--port", "0", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_to_start_without_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_VERIFY_AUDIENCE", raising=False)
    proc = _serve([])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "--audience" in lines[0] and "--no-auth" in lines[0], out
    assert "Traceback" not in out


def test_no_auth_is_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_VERIFY_AUDIENCE", raising=False)
    proc = _serve(["--no-auth", "--allow", "s3://renders/"])
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the announcement comes before uvicorn starts listening
            seen.append(line)
            if "listening" in line:
                break
        text = "".join(seen)
        assert "authentication is OFF" in text, text
        assert "allowed: s3://renders/" in text, text
    finally:
        proc.terminate()
        proc.wait(30)


# -- allowlist ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_url",
    [
        "/etc/passwd.json",
        "file:///srv/jobs/job.json",
        "http://127.0.0.1:9/job.json",
        "http://localhost/job.json",
        "http://169.254.169.254/computeMetadata/v1/job.json",
        "http://metadata.google.internal/job.json",
        "http://[::1]:8080/job.json",
    ],
)
def test_default_policy_refuses_local_and_internal(job_url: str) -> None:
    runtime = Recorder()
    response = post(create_app(runtime, ServerConfig(allow=AllowPolicy())), {"jobUrl": job_url, "chunkId": 0})
    assert response.status_code == 403, response.text
    assert job_url in response.json()["error"]
    assert runtime.calls == []


def test_prefixes_allow_only_what_they_name(tmp_path: Path) -> None:
    runtime = Recorder()
    jobs = tmp_path / "jobs"
    policy = AllowPolicy(prefixes=["s3://renders/jobs/", f"file://{jobs}/", "s3://renders/out/"])
    app = create_app(runtime, ServerConfig(allow=policy))
    ok = [
        {"jobUrl": "s3://renders/jobs/a/job.json", "chunkId": 0, "store": "s3://renders/out/a"},
        {"jobUrl": str(jobs / "b" / "job.json"), "chunkId": 1},
    ]
    refused = [
        {"jobUrl": "s3://renders/private/job.json", "chunkId": 0},
        {"jobUrl": "s3://renders/jobs/a/job.json", "chunkId": 0, "store": "s3://elsewhere/out"},
        {"jobUrl": str(jobs / ".." / "secret" / "job.json"), "chunkId": 0},
        {"jobUrl": str(tmp_path / "jobs-secret" / "job.json"), "chunkId": 0},
        {"jobUrl": "https://example.com/job.json", "chunkId": 0},
    ]
    assert [post(app, body).status_code for body in ok] == [200, 200]
    assert [post(app, body).status_code for body in refused] == [403] * 5
    assert len(runtime.calls) == 2


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(st.sampled_from(["..", ".", "x", "jobs", "y.json", ""]), min_size=1, max_size=8))
def test_no_path_climbs_out_of_a_file_prefix(parts: list[str]) -> None:
    path = "/srv/jobs/" + "/".join(parts)
    allowed = AllowPolicy(prefixes=["file:///srv/jobs/"]).refusal("job", path) is None
    real = os.path.abspath(path)
    if real.startswith("/srv/jobs/"):
        assert allowed and normalize(path).startswith("file:///srv/jobs/")
    elif real != "/srv/jobs":  # the folder itself may go either way; anything outside never
        assert not allowed, (path, normalize(path))


# -- a caller that goes away ---------------------------------------------------------------------------------


class DripServer:
    """Loopback http server: `/drip` sends headers, then one byte every 50 ms until the client goes (and
    records that); `/missing` answers 404 at once."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.client_gone = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/drip":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                owner.started.set()
                try:
                    while True:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.05)  # the drip's pace; nothing waits on it
                except OSError:
                    owner.client_gone.set()

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def uvicorn_app(app: Any) -> Iterator[str]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_disconnect_cancels_the_spec_fetch_and_frees_the_slot(tmp_path: Path) -> None:
    drip = DripServer()
    runtime = WorkerRuntime(tmp_path / "ws", loader_options=LoaderOptions(timeout=3600))
    config = ServerConfig(concurrency=1, allow=AllowPolicy(prefixes=[drip.url + "/"]), default_store=str(tmp_path))
    try:
        with uvicorn_app(create_app(runtime, config)) as url:
            host, port = url.removeprefix("http://").split(":")
            body = b'{"jobUrl": "%s/drip", "chunkId": 0}' % drip.url.encode()
            caller = socket.create_connection((host, int(port)))
            caller.sendall(
                b"POST / HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert drip.started.wait(120), "the worker never fetched the spec"
            caller.close()  # the caller goes away while the spec still drips
            assert drip.client_gone.wait(120), "the spec fetch went on after its caller left"
            # the only slot is free: a second request is answered (its spec is missing: 422, not retryable)
            second = httpx.post(url + "/", json={"jobUrl": drip.url + "/missing", "chunkId": 0}, timeout=None)
            assert second.status_code == 422, second.text
            assert "404" in second.json()["stderr"]
    finally:
        drip.close()


def test_a_composition_named_by_url_is_checked_too(tmp_path: Path) -> None:
    from fakes.cloudjobs import make_spec

    from helios_kit.spec import dumps

    spec = make_spec(frames=4, chunks=1, job_id="sneaky")
    sneaky = spec.model_copy(update={"config": spec.config.model_copy(update={"input": "s3://other-bucket/x.html"})})
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.json").write_text(dumps(sneaky))
    rendered: list[str] = []
    runtime = WorkerRuntime(tmp_path / "ws", render=lambda config, **kw: rendered.append(kw["input_location"]))
    policy = AllowPolicy(prefixes=[f"file://{tmp_path}/jobs/"])
    body = {"jobUrl": str(tmp_path / "jobs" / "job.json"), "chunkId": 0}
    response = post(create_app(runtime, ServerConfig(allow=policy)), body)
    assert response.status_code == 422, response.text
    assert "composition s3://other-bucket/x.html is not allowed" in response.json()["stderr"]
    assert response.json()["retryable"] is False and rendered == []
