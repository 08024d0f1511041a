"""Remote runs a user can follow and afford, through the real `helios job run` client (a subprocess) against
the Lambda emulator running the real handler, the real worker server, and moto S3, all on 127.0.0.1:

* throttles back off without spending attempts and transient failures are retried (5 by default for remote
  backends): a line per throttle and per retry as they happen, counts in the summary;
* an authentication or authorization failure (a missing function, a wrong Cloud Run audience) stops the
  job at the first chunk with one line;
* `helios job cancel` reaches invocations in flight: the cancel marker in the store stops their renders
  (a render that only ends when cancelled), nothing is committed;
* the Lambda README's upload steps, followed literally, give a job `helios job validate` and a worker
  resolve; the old layout is refused by validate with every place it looked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import httpx
import pytest
from fakes.aws import make_bucket
from fakes.cloudjobs import HTML, make_spec, upload_job
from fakes.gce_metadata import fake_metadata
from fakes.lambda_emulator import LambdaEmulator

from helios_kit.cancel_marker import marker_rel
from helios_kit.store import ArtifactStore

HELIOS = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"
REPO = Path(__file__).resolve().parents[2]


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HELIOS_HOME": str(tmp_path / "home"), **extra}


def lambda_run(job_url: str, store: str, emulator: LambdaEmulator, *more: str, function: str | None = None) -> list:
    return [
        HELIOS,
        "job",
        "run",
        job_url,
        "--backend",
        "lambda",
        "--function",
        function or emulator.function_name,
        "--endpoint-url",
        emulator.endpoint_url,
        "--region",
        "us-east-1",
        "--store",
        store,
        "--quiet",
        "--retry-delay",
        "0.05",
        *more,
    ]


def test_throttles_and_retries_are_shown_and_counted(s3, worker_env, tmp_path: Path) -> None:
    spec = make_spec(frames=24, chunks=8, job_id="throttle-job")
    url = upload_job(spec, "s3://renders/jobs/throttle")
    with LambdaEmulator(throttle_rate=0.4, failure_rate=0.25, workers=2, seed=11) as emulator:
        run = subprocess.run(
            # the chunks' invocations only (the merge's own retries: tests/test_merge_retries.py); no straggler
            # backups: a failed backup attempt prints a line of its own (tests/test_executor.py), but an attempt
            # the race abandons (the other one won meanwhile) may still fail in the emulator, which counts a
            # failure no client ever sees, so lines == failures would not hold exactly with backups on
            lambda_run(
                url, "s3://renders/out/throttle", emulator, "--concurrency", "4", "--merge", "local", "--no-backups"
            ),
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=280,
        )
        counts = dict(emulator.counts)
    assert run.returncode == 0, run.stderr[-3000:]  # 25% transient failures do not fail the job any more
    assert counts.get("throttled", 0) > 0 and counts.get("failed", 0) > 0, counts
    throttle_lines = [line for line in run.stderr.splitlines() if "throttled (" in line and "not counted" in line]
    retry_lines = [line for line in run.stderr.splitlines() if re.search(r"attempt \d+ of 6 failed .* retrying", line)]
    assert len(throttle_lines) == counts["throttled"], run.stderr
    assert len(retry_lines) == counts["failed"], run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.endswith(f"; {counts['failed']} retries, {counts['throttled']} throttled"), summary


def test_missing_function_stops_the_job_at_the_first_chunk(s3, worker_env, tmp_path: Path) -> None:
    spec = make_spec(frames=24, chunks=6, job_id="denied-job")
    url = upload_job(spec, "s3://renders/jobs/denied")
    with LambdaEmulator(workers=1) as emulator:
        run = subprocess.run(
            lambda_run(url, "s3://renders/out/denied", emulator, "--concurrency", "1", function="no-such-fn"),
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=180,
        )
        counts = dict(emulator.counts)
    assert run.returncode != 0
    assert counts.get("not_found") == 1, counts  # one invocation, not one per chunk (nor per retry)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ResourceNotFoundException" in errors[0] and "job stops" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert "5 cancelled" in run.stdout, run.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wrong_cloud_run_audience_stops_the_job_at_the_first_chunk(
    s3, worker_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(frames=24, chunks=6, job_id="audience-job")
    url = upload_job(spec, "s3://renders/jobs/audience")
    with fake_metadata(monkeypatch) as metadata:
        port = _free_port()
        service = f"http://127.0.0.1:{port}"
        env = client_env(tmp_path, HELIOS_VERIFY_AUDIENCE=service, HELIOS_CERTS_URL=metadata.certs_url)
        server_log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [HELIOS, "-v", "worker", "serve", "--port", str(port), "--allow", "s3://renders/"],
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    if httpx.get(f"{service}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()
                    time.sleep(0.1)  # polling for the server to listen
            run = subprocess.run(
                [
                    HELIOS,
                    "job",
                    "run",
                    url,
                    "--backend",
                    "cloudrun",
                    "--service-url",
                    service,
                    "--audience",
                    "https://wrong.example",
                    "--store",
                    "s3://renders/out/audience",
                    "--quiet",
                    "--concurrency",
                    "1",
                    "--retry-delay",
                    "0.05",
                ],
                env=client_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=180,
            )
        finally:
            server.terminate()
            server.wait(30)
            server_log.close()
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 403" in errors[0] and "audience" in errors[0], run.stderr
    refused = (tmp_path / "server.log").read_text().count("invalid ID token")
    assert refused <= 1, (tmp_path / "server.log").read_text()  # one 403, not one per chunk
    assert "5 cancelled" in run.stdout, run.stdout


def test_cancel_reaches_invocations_in_flight(s3, worker_env, tmp_path: Path, monkeypatch) -> None:
    events = tmp_path / "events"
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.cancel_render:wait_for_cancel_render")
    monkeypatch.setenv("HELIOS_TEST_EVENTS", str(events))
    monkeypatch.setenv("HELIOS_CANCEL_POLL", "0.2")
    spec = make_spec(frames=24, chunks=2, job_id="cancel-job")
    url = upload_job(spec, "s3://renders/jobs/cancel")
    store = "s3://renders/out/cancel"
    env = client_env(tmp_path)
    with LambdaEmulator(workers=2) as emulator:
        client = subprocess.Popen(
            lambda_run(url, store, emulator, "--concurrency", "2"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            starts = {f"started-{c.start_frame}" for c in spec.chunks}
            while not starts <= {p.name for p in events.glob("started-*")}:
                assert client.poll() is None, client.communicate()
                time.sleep(0.05)  # polling for both invocations to be rendering
            cancel = subprocess.run(
                [HELIOS, "job", "cancel", spec.job_id], env=env, capture_output=True, text=True, timeout=60
            )
            assert cancel.returncode == 0, cancel.stderr
            out, _err = client.communicate(timeout=120)
            cancelled = {f"cancelled-{c.start_frame}" for c in spec.chunks}
            while not cancelled <= {p.name for p in events.glob("cancelled-*")}:
                time.sleep(0.05)  # polling for the renders to see the marker (pytest's timeout guards)
        finally:
            if client.poll() is None:
                client.kill()
    assert client.returncode != 0
    assert "cancelled" in out
    assert ArtifactStore(store).exists(marker_rel(spec.job_id))
    outputs = [n for n in fsspec.filesystem("s3").find("renders/out/cancel") if n.endswith(".mp4")]
    assert outputs == [], outputs  # the cancelled invocations committed nothing


# -- the Lambda README's upload steps --------------------------------------------------------------------


def _readme_run_block() -> list[str]:
    text = (REPO / "plugins" / "helios-lambda" / "README.md").read_text()
    block = text.split("## Run", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _aws_s3_cp(argv: list[str], cwd: Path, bucket: str) -> None:
    """`aws s3 cp [--recursive] SRC DST` done with fsspec (the AWS CLI is not installed here)."""
    args = [a for a in argv[3:] if not a.startswith("--")]
    source, target = cwd / args[0], args[1].replace("my-bucket", bucket).removeprefix("s3://")
    fs = fsspec.filesystem("s3")
    if "--recursive" in argv:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            fs.put_file(str(path), target.rstrip("/") + "/" + path.relative_to(source).as_posix())
    else:
        fs.put_file(str(source), target)


def test_lambda_readme_upload_steps_resolve(s3, worker_env, tmp_path: Path) -> None:
    make_bucket(s3, "readme-bucket")
    (tmp_path / "composition").mkdir()
    (tmp_path / "composition" / "index.html").write_text(HTML)
    env = client_env(tmp_path)
    lines = _readme_run_block()
    assert any(line.startswith("aws s3 cp --recursive composition/") for line in lines), lines
    for line in lines:
        argv = shlex.split(line.split("#", 1)[0])
        if argv[:3] == ["aws", "s3", "cp"]:
            _aws_s3_cp(argv, tmp_path, "readme-bucket")
        elif argv[:2] == ["helios", "render"]:  # as written, made tiny (later flags win)
            small = ["--frame-count", "24", "--chunk-frames", "12", "--width", "160", "--height", "120"]
            done = subprocess.run([HELIOS, *argv[1:], *small], env=env, cwd=tmp_path, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        elif argv[:3] == ["helios", "job", "validate"]:
            _validate_and_render_one_chunk(argv[3].replace("my-bucket", "readme-bucket"), env, tmp_path)
            return
    raise AssertionError(f"the README's Run block has no `helios job validate` step: {lines}")


def _validate_and_render_one_chunk(job: str, env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # not the folder the job was emitted in: only S3 holds the composition
    elsewhere.mkdir()
    validate = subprocess.run([HELIOS, "job", "validate", job], env=env, cwd=elsewhere, capture_output=True, text=True)
    assert validate.returncode == 0, validate.stderr
    assert "composition: found at s3://readme-bucket/jobs/intro/composition/index.html" in validate.stdout
    worker = subprocess.run(
        [HELIOS, "worker", "run", job, "0", "--store", "s3://readme-bucket/renders/intro/"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert worker.returncode == 0, worker.stderr


def test_validate_says_where_it_looked_when_the_composition_is_missing(s3, tmp_path: Path) -> None:
    spec = make_spec(frames=8, chunks=2, job_id="layout-job")
    spec = spec.model_copy(update={"config": spec.config.model_copy(update={"input": "composition/index.html"})})
    url = upload_job(spec, "s3://renders/jobs/layout")  # index.html at the job's folder: the old README layout
    run = subprocess.run(
        [HELIOS, "job", "validate", url], env=client_env(tmp_path), cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "composition/index.html" in lines[0] and "s3://renders/jobs/layout/composition/index.html" in lines[0]
    assert str(tmp_path / "composition" / "index.html") in lines[0]


def test_chunks_still_running_remotely_are_named(caplog: pytest.LogCaptureFixture) -> None:
    """After a cancel stops the client's wait, the backend says which invocations still run."""
    import threading

    from helios_kit.backends.base import ChunkContext
    from helios_kit.backends.remote import RemoteBackend

    entered, release = threading.Event(), threading.Event()

    class Slow(RemoteBackend):
        name = "slow"

        def invoke(self, request, *, cancel, timeout):
            entered.set()
            release.wait(600)  # hang guard only: released below
            return b'{"status": "ok"}'

    spec = make_spec(frames=8, chunks=2, job_id="inflight-job")
    context = ChunkContext(job_url="s3://b/j.json", job_dir=".", store_url="s3://b/out")
    backend, cancel = Slow(), threading.Event()
    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.update(r=backend.run_chunk(spec, spec.chunks[1], context, cancel=cancel))
    )
    runner.start()
    assert entered.wait(60)
    cancel.set()
    runner.join(60)
    assert outcome["r"].status.value == "cancelled"
    with caplog.at_level("WARNING", logger="helios.slow"):
        backend.warn_in_flight()
    assert "1 chunk still running" in caplog.text and "(chunks 1)" in caplog.text, caplog.text
    release.set()
    while backend.in_flight:  # the helper thread returns once released
        time.sleep(0.01)
    caplog.clear()
    backend.warn_in_flight()
    assert "still running" not in caplog.text
