"""The cloudrun backend against the real worker server (`helios worker serve` in a subprocess) with ID tokens
from a fake GCE metadata server and verification against its certs; job and store in moto S3."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fakes.cloudjobs import make_spec, upload_job
from fakes.drive import drive
from fakes.gce_metadata import SigningKey, fake_metadata
from fakes.renders import decode_frame_indexes

from helios_kit.backends.base import ChunkContext
from helios_kit.plugins import get_plugins, reset_plugins
from helios_kit.stitch import stitch
from helios_kit.store import ArtifactStore

STORE = "s3://renders/out/cloudrun-job"

# a worker answering these can be slow on a loaded machine (first S3 read, imports): a bound, not a timing
HTTP = SimpleNamespace(get=partial(httpx.get, timeout=120), post=partial(httpx.post, timeout=120))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch):
    with fake_metadata(monkeypatch) as server:
        yield server


@pytest.fixture
def service(s3, worker_env, metadata, tmp_path: Path):
    """`helios worker serve` on a free loopback port, verifying ID tokens for its own URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HELIOS_VERIFY_AUDIENCE": url,
        "HELIOS_CERTS_URL": metadata.certs_url,
        "HELIOS_MAX_BODY": "4096",
        "HELIOS_WORKSPACE": str(tmp_path / "ws"),
    }
    helios = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [helios, "worker", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def backend_for(url: str, **options):
    reset_plugins()
    cls = get_plugins().backend("cloudrun")  # through the entry point, as `helios job run --backend cloudrun`
    return cls(cls.Options(service_url=url, timeout=60, **options))


def context(job_url: str, force: bool = False) -> ChunkContext:
    return ChunkContext(job_url=job_url, job_dir=".", store_url=STORE, force=force)


def test_plugin_is_listed() -> None:
    reset_plugins()
    info = {i.name: i for i in get_plugins().plugin_infos()}
    assert info["cloudrun"].backends == ["cloudrun"] and info["cloudrun"].error is None


def test_end_to_end_with_id_tokens(service, metadata, tmp_path: Path) -> None:
    spec = make_spec(job_id="cloudrun-job")
    url = upload_job(spec)
    with backend_for(service) as backend:
        first = drive(backend, spec, context(url), chunks=spec.chunks[:1], concurrency=2)
        assert not first.failed, first.results
        report = drive(backend, spec, context(url), concurrency=4)
    assert not report.failed, {cid: r.stderr for cid, r in report.results.items()}
    assert [cid for cid, r in sorted(report.results.items()) if r.status == "skipped"] == [0]
    assert metadata.issued == [service]  # one token, audience = the service URL, reused for every request
    store = ArtifactStore(STORE)
    local = [store.fetch(c.output_file, tmp_path / c.output_file) for c in spec.chunks]
    stitch(local, tmp_path / "out.mp4", expected_frames=spec.config.frame_count)
    assert decode_frame_indexes(tmp_path / "out.mp4", 160, 120) == list(range(spec.config.frame_count))


def test_token_verification(service, metadata) -> None:
    body = {"jobUrl": "s3://renders/jobs/job.json", "chunkId": 0}
    assert HTTP.post(service + "/", json=body).status_code == 401
    assert HTTP.post(service + "/", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    cases = {
        "other audience": metadata.key.sign("https://someone-else.a.run.app"),
        "expired": metadata.key.sign(service, lifetime=-3600),
        "unknown key": SigningKey("fake-key-1").sign(service),
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        response = HTTP.post(service + "/", json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, (name, response.text)
        assert "invalid ID token" in response.json()["error"]
    # the backend without a token gets a clear, non-retryable result
    spec = make_spec(job_id="cloudrun-job")
    with backend_for(service, auth=False) as backend:
        result = backend.run_chunk(
            spec, spec.chunks[0], context("s3://renders/jobs/job.json"), cancel=threading.Event()
        )
    assert not result.ok and not result.retryable and "HTTP 401" in result.stderr and "run.invoker" in result.stderr


def test_bad_requests(service, metadata) -> None:
    token = metadata.key.sign(service)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert HTTP.get(service + "/healthz").json() == {"ok": True}
    response = HTTP.post(service + "/", content=b"{not json", headers=headers)
    assert response.status_code == 400 and response.json()["error"].startswith("request body: invalid JSON at line 1")
    response = HTTP.post(service + "/", json={"jobUrl": "s3://renders/jobs/job.json"}, headers=headers)
    assert response.status_code == 400 and "chunkId" in response.json()["error"]
    response = HTTP.post(service + "/", json={"jobUrl": "x" * 10_000, "chunkId": 0}, headers=headers)
    assert response.status_code == 413
    # a chunk the job does not have: the worker's own result, not retryable → 422
    spec = make_spec(job_id="cloudrun-job")
    url = upload_job(spec)
    response = HTTP.post(service + "/", json={"jobUrl": url, "chunkId": 99, "store": STORE}, headers=headers)
    assert response.status_code == 422
    result = response.json()
    assert result["status"] == "failed" and result["retryable"] is False and "unknown chunk id 99" in result["stderr"]


def test_unreachable_service_is_retryable(metadata) -> None:
    spec = make_spec(job_id="cloudrun-job")
    with backend_for(f"http://127.0.0.1:{_free_port()}") as backend:
        result = backend.run_chunk(
            spec, spec.chunks[0], context("s3://renders/jobs/job.json"), cancel=threading.Event()
        )
    assert not result.ok and result.retryable and "cannot reach" in result.stderr


def test_service_url_required() -> None:
    from helios_cloudrun.backend import CloudRunBackend, CloudRunConfigError

    with pytest.raises(CloudRunConfigError, match="--service-url"):
        CloudRunBackend()
