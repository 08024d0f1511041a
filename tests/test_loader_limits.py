"""Spec downloads have a total deadline (HELIOS_SPEC_TIMEOUT) besides the size cap, and permanent faults are
not retryable. A loopback server drips its response one byte at a time; the tests assert the error, never
the time it took."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner
from fakes.loopback import LoopbackHTTPServer

from helios_kit.cli import cli
from helios_kit.errors import LoaderError
from helios_kit.loaders import LoaderOptions, load_spec, read_source
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dumps

BODY = dumps(plan_job(RenderConfig(input="index.html", frame_count=4), concurrency=2, job_id="drip-1")).encode()
#: Set at teardown: the dripping handlers stop writing and return.
RELEASE = threading.Event()
#: Pause between two bytes of a dripping response (the "1 byte per second" server, a bit faster).
DRIP_S = 0.25


class DripHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _drip(self, data: bytes) -> None:
        for byte in data:
            if RELEASE.wait(DRIP_S):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def do_GET(self) -> None:
        try:
            if self.path == "/drip-body.json":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self._drip(BODY)
            elif self.path == "/drip-headers.json":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._drip(b"X-Padding: " + b"a" * 10_000 + b"\r\n\r\n")
            elif self.path.startswith("/status/"):
                status = int(self.path.rsplit("/", 1)[1])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass


class QuietServer(LoopbackHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@pytest.fixture(scope="module")
def drip_base() -> Iterator[str]:
    RELEASE.clear()
    server = QuietServer(("127.0.0.1", 0), DripHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    RELEASE.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/drip-body.json", "/drip-headers.json"])
def test_a_dripping_server_fails_at_the_deadline_with_one_line(drip_base, monkeypatch, path) -> None:
    monkeypatch.setenv("HELIOS_SPEC_TIMEOUT", "1")
    with pytest.raises(LoaderError) as caught:
        load_spec(f"{drip_base}{path}")
    assert str(caught.value) == f"timed out after 1 s fetching {drip_base}{path}"
    assert caught.value.retryable


def test_job_validate_reports_the_deadline_in_one_line(drip_base, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_SPEC_TIMEOUT", "1")
    result = CliRunner().invoke(cli, ["job", "validate", f"{drip_base}/drip-body.json"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"error: timed out after 1 s fetching {drip_base}/drip-body.json"]


def test_a_stalled_fsspec_store_fails_at_the_deadline(monkeypatch) -> None:
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    fs = fsspec.filesystem("memory")
    fs.pipe("/limits/job.json", BODY)
    stalled = threading.Event()

    def stalled_cat_file(self, path, *args, **kwargs):
        stalled.wait()  # an object store that never answers, until the test ends
        return b""

    monkeypatch.setattr(MemoryFileSystem, "cat_file", stalled_cat_file)
    try:
        with pytest.raises(LoaderError, match=r"^timed out after 0\.5 s fetching memory://limits/job\.json$"):
            read_source("memory://limits/job.json", LoaderOptions(timeout=0.5))
    finally:
        stalled.set()
        fs.rm("/limits/job.json")


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (403, False), (410, False), (408, True), (429, True), (503, True)]
)
def test_http_status_decides_retryable_as_data(drip_base, status, retryable) -> None:
    with pytest.raises(LoaderError, match=rf"^HTTP {status}") as caught:
        load_spec(f"{drip_base}/status/{status}")
    assert caught.value.retryable is retryable


def test_permanent_local_and_scheme_faults_are_not_retryable(tmp_path) -> None:
    (tmp_path / "big.json").write_bytes(b" " * 2048)
    cases = [
        (tmp_path / "missing.json", LoaderOptions()),
        (tmp_path, LoaderOptions()),
        (tmp_path / "big.json", LoaderOptions(max_bytes=1024)),
        ("ftp://example.test/job.json", LoaderOptions()),
        ("memory://nowhere/job.json", LoaderOptions()),
    ]
    for source, options in cases:
        with pytest.raises(LoaderError) as caught:
            load_spec(source, options)
        assert caught.value.retryable is False, str(caught.value)


def test_a_refused_connection_may_be_retried() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LoaderError, match="connection refused") as caught:
        load_spec(f"http://127.0.0.1:{port}/job.json")
    assert caught.value.retryable


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_a_bad_timeout_variable_is_one_line(monkeypatch, value) -> None:
    monkeypatch.setenv("HELIOS_SPEC_TIMEOUT", value)
    result = CliRunner().invoke(cli, ["job", "validate", "job.json"])
    assert result.exit_code != 0
    assert result.output.strip() == f"error: HELIOS_SPEC_TIMEOUT: must be a number of seconds > 0, got {value!r}"


def test_a_missing_extra_package_is_not_retryable(monkeypatch) -> None:
    import fsspec.core

    def no_driver(url, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_driver)
    with pytest.raises(LoaderError, match=r"^s3:// needs an extra package: pip install 'helios-kit\[s3\]'$") as caught:
        read_source("s3://bucket/job.json", LoaderOptions(timeout=5))
    assert caught.value.retryable is False
