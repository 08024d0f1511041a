"""Spec loaders against a real HTTP server and moto's S3 server, both on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.loopback import LoopbackHTTPServer

from helios_kit.cli import cli
from helios_kit.errors import LoaderError, SpecError
from helios_kit.loaders import LoaderOptions, load_spec
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dumps

SPEC = plan_job(RenderConfig(input="index.html", frame_count=30), concurrency=2, job_id="served-1")
BODY = dumps(SPEC).encode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path == "/job.json":
            self._send(200, BODY, {"Content-Type": "application/json"})
        elif path == "/moved":
            self._send(302, b"", {"Location": "/job.json"})
        elif path == "/index.html":  # the job's composition, next to it (validate checks it is reachable)
            self._send(200, b"<!doctype html><p>intro</p>", {"Content-Type": "text/html"})
        elif path == "/missing.json":
            self._send(404, b"not here")
        elif path == "/boom.json":
            self._send(500, b"oops")
        elif path == "/slow.json":
            time.sleep(3)
            self._send(200, BODY)
        elif path == "/invalid.json":
            self._send(200, b'{"version": 1,\n "jobId": }')
        elif path == "/schema.json":
            data = json.loads(BODY)
            data["chunks"][1]["frameCount"] = 0
            self._send(200, json.dumps(data).encode())
        elif path == "/huge.json":
            self._send(200, b" " * (2 * 1024 * 1024))
        elif path == "/huge-chunked.json":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b" " * 65536
            try:
                for _ in range(40):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self._send(404, b"")


class QuietServer(LoopbackHTTPServer):
    def handle_error(self, request, client_address) -> None:  # clients that time out on purpose
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_200_gives_spec_and_cwd_as_job_dir(http_base, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    spec, job_dir = load_spec(f"{http_base}/job.json")
    assert spec == SPEC
    assert job_dir == tmp_path


def test_http_redirect_is_followed(http_base) -> None:
    assert load_spec(f"{http_base}/moved")[0] == SPEC


@pytest.mark.parametrize(
    ("path", "options", "error", "pattern"),
    [
        ("/missing.json", {}, LoaderError, r"^HTTP 404 Not Found from http://127\.0\.0\.1:\d+/missing\.json$"),
        ("/boom.json", {}, LoaderError, r"^HTTP 500 Internal Server Error from .*/boom\.json$"),
        ("/slow.json", {"timeout": 0.5}, LoaderError, r"^timed out after 0\.5 s fetching .*/slow\.json$"),
        ("/invalid.json", {}, SpecError, r"invalid JSON at line 2, column 11: Expecting value"),
        ("/schema.json", {}, SpecError, r"chunks\[1\]\.frameCount: must be > 0"),
        ("/huge.json", {"max_bytes": 1024 * 1024}, LoaderError, r"larger than the 1 MiB cap"),
        ("/huge-chunked.json", {"max_bytes": 1024 * 1024}, LoaderError, r"larger than the 1 MiB cap"),
    ],
)
def test_http_failures_are_one_clear_line(http_base, path, options, error, pattern) -> None:
    with pytest.raises(error, match=pattern) as caught:
        load_spec(f"{http_base}{path}", LoaderOptions(**options))
    assert "\n" not in str(caught.value)


def test_default_cap_is_16_mib_and_timeout_30_s() -> None:
    options = LoaderOptions()
    assert options.max_bytes == 16 * 1024 * 1024
    assert options.timeout == 30


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LoaderError, match=rf"^connection refused: http://127\.0\.0\.1:{port}/job\.json$"):
        load_spec(f"http://127.0.0.1:{port}/job.json")


def test_local_file_missing_and_directory(tmp_path) -> None:
    with pytest.raises(LoaderError, match="job file not found"):
        load_spec(tmp_path / "nope.json")
    with pytest.raises(LoaderError, match="is a directory"):
        load_spec(tmp_path)
    (tmp_path / "job.json").write_bytes(BODY)
    spec, job_dir = load_spec(str(tmp_path / "job.json"))
    assert spec == SPEC and job_dir == tmp_path


def test_unsupported_scheme_lists_supported() -> None:
    with pytest.raises(LoaderError, match=r"unsupported scheme 'ftp' .*supported: file, gcs, gs, http, https"):
        load_spec("ftp://example.test/job.json")


def test_validate_command_over_http(http_base) -> None:
    result = CliRunner().invoke(cli, ["job", "validate", f"{http_base}/job.json"])
    assert result.exit_code == 0, result.output
    assert "served-1" in result.output
    result = CliRunner().invoke(cli, ["job", "validate", f"{http_base}/missing.json"])
    assert result.exit_code != 0 and "HTTP 404" in result.output


# --- S3 through moto's server on 127.0.0.1 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> str:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="jobs")
    client.put_object(Bucket="jobs", Key="intro/job.json", Body=BODY)
    client.put_object(Bucket="jobs", Key="intro/bad.json", Body=b"[1, 2")
    client.put_object(Bucket="jobs", Key="intro/index.html", Body=b"<!doctype html><p>intro</p>")
    return s3_endpoint


def test_s3_through_fsspec(s3_env, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    spec, job_dir = load_spec("s3://jobs/intro/job.json")
    assert spec == SPEC and job_dir == Path.cwd()
    with pytest.raises(LoaderError, match=r"^job file not found: s3://jobs/intro/nope\.json$"):
        load_spec("s3://jobs/intro/nope.json")
    with pytest.raises(SpecError, match=r"s3://jobs/intro/bad\.json: invalid JSON at line 1"):
        load_spec("s3://jobs/intro/bad.json")
    result = CliRunner().invoke(cli, ["job", "validate", "s3://jobs/intro/job.json"])
    assert result.exit_code == 0, result.output
