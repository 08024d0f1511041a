"""--webhook: the HMAC-SHA256 signature checked by a loopback HTTP receiver, retries on 5xx, no retry on
other 4xx, a missing secret as one line, and `helios job run` posting on completion and on failure."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.jobs import make_job
from fakes.loopback import LoopbackHTTPServer

from helios_kit.errors import SpecError
from helios_kit.webhook import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Webhook,
    WebhookFailed,
    WebhookPayload,
    verify,
    webhook_secret,
)

SECRET = "s3cr3t-for-tests"


class Receiver:
    """A loopback HTTP server recording each POST (headers, raw body) and answering scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.received = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status < 300:
                    receiver.received.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make  # type: ignore[misc]
    for one in made:
        one.close()


def expected_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signature_checks_out_at_the_receiver_after_retries(receiver) -> None:
    hook = receiver([500, 503, 200])
    payload = WebhookPayload(event="job.completed", job_id="job-1", state="completed", frames=40)
    status = Webhook(hook.url, SECRET, attempts=5, first_wait_s=0.01).send(payload)
    assert status == 200 and len(hook.requests) == 3
    for headers, body in hook.requests:
        assert headers[SIGNATURE_HEADER] == expected_signature(body)
        assert verify(SECRET, body, headers[SIGNATURE_HEADER])
        assert not verify("another-secret", body, headers[SIGNATURE_HEADER])
        assert not verify(SECRET, body + b" ", headers[SIGNATURE_HEADER])
        assert headers[EVENT_HEADER] == "job.completed"
        assert json.loads(body) == json.loads(payload.model_dump_json(by_alias=True))


def test_a_client_error_is_not_retried_and_gives_up_with_one_line(receiver) -> None:
    hook = receiver([404, 200])
    with pytest.raises(WebhookFailed, match="HTTP 404"):
        Webhook(hook.url, SECRET, first_wait_s=0.01).send(
            WebhookPayload(event="job.failed", job_id="j", state="failed")
        )
    assert len(hook.requests) == 1
    down = receiver([500] * 10)
    note = Webhook(down.url, SECRET, attempts=3, first_wait_s=0.01).notify(
        WebhookPayload(event="job.failed", job_id="j", state="failed")
    )
    assert note is not None and "not delivered after 3 tries: HTTP 500" in note and "\n" not in note
    assert len(down.requests) == 3


def test_secret_and_url_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_WEBHOOK_SECRET", raising=False)
    with pytest.raises(SpecError, match="--webhook needs a signing secret"):
        webhook_secret(None)
    monkeypatch.setenv("HELIOS_WEBHOOK_SECRET", "from-env")
    assert webhook_secret(None) == "from-env" and webhook_secret("flag") == "flag"
    with pytest.raises(SpecError, match="--webhook: 'ftp://x' is not an http"):
        Webhook("ftp://x", "k")


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    tests = str(Path(__file__).parent)
    env = dict(
        os.environ,
        HELIOS_HOME=str(tmp_path / "home"),
        HELIOS_WORKER_RENDER="fakes.renders:frame_index_render",
        PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("HELIOS_WEBHOOK_SECRET", None)
    return env


def helios(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def test_job_run_posts_on_completion_and_on_failure(tmp_path: Path, receiver, fake_env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    hook = receiver([500])  # the first delivery fails: the run retries it
    done = helios("job", "run", str(job), "-q", "--webhook", hook.url, "--webhook-secret", SECRET, env=fake_env)
    assert done.returncode == 0, done.stderr
    headers, body = hook.requests[-1]
    assert len(hook.requests) == 2 and verify(SECRET, body, headers[SIGNATURE_HEADER])
    sent = json.loads(body)
    assert sent["event"] == "job.completed" and sent["jobId"] == "job-1" and sent["state"] == "completed"
    assert sent["frames"] == 12 and sent["output"].endswith("out.mp4") and "3 rendered" in sent["summary"]

    failing = dict(fake_env, HELIOS_FAKE_RENDER_FAIL_FRAMES="5", HELIOS_WEBHOOK_SECRET=SECRET)
    failed = helios("job", "run", str(job), "-q", "--force", "--retries", "0", "--webhook", hook.url, env=failing)
    assert failed.returncode != 0
    headers, body = hook.requests[-1]
    sent = json.loads(body)
    assert verify(SECRET, body, headers[SIGNATURE_HEADER]) and sent["event"] == "job.failed"
    assert "frame 5" in sent["error"] and headers[EVENT_HEADER] == "job.failed"


def test_job_run_without_a_secret_is_one_line(tmp_path: Path, fake_env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=1)
    result = helios("job", "run", str(job), "--webhook", "http://127.0.0.1:9/hook", env=fake_env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --webhook needs a signing secret: --webhook-secret or HELIOS_WEBHOOK_SECRET"
    assert not (tmp_path / "job" / "chunks").exists()
