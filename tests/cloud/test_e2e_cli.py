"""End to end through `helios job run` (the real executor in a client subprocess): a JobSpec in S3, chunks
rendered by Lambda (emulator) or Cloud Run (the real server), merged, frame-exact; a client killed mid-job
and re-run skips the chunks already in S3. All on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from fakes.cloudjobs import make_spec, upload_job
from fakes.lambda_emulator import LambdaEmulator
from fakes.renders import decode_frame_indexes

from helios_kit.store import ArtifactStore

HELIOS = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HELIOS_HOME": str(tmp_path / "home"), **extra}


def lambda_args(job_url: str, store: str, emulator: LambdaEmulator, *more: str) -> list[str]:
    return [
        HELIOS,
        "job",
        "run",
        job_url,
        "--backend",
        "lambda",
        "--function",
        emulator.function_name,
        "--endpoint-url",
        emulator.endpoint_url,
        "--region",
        "us-east-1",
        "--store",
        store,
        "--quiet",
        "--retry-delay",
        "0.1",
        *more,
    ]


def merged_frames(store_url: str, spec, tmp_path: Path) -> list[int]:
    local = ArtifactStore(store_url).fetch(spec.merge.output_file, tmp_path / "merged.mp4")
    return decode_frame_indexes(local, spec.config.width, spec.config.height)


def test_lambda_job_run_killed_then_resumed(s3, worker_env, tmp_path: Path) -> None:
    spec = make_spec(frames=24, chunks=6, job_id="resume-job")
    url = upload_job(spec, "s3://renders/jobs/resume")
    store = "s3://renders/out/resume"
    # The first two chunks run; later invocations are held until the client is dead, so some chunks are done
    # and some are not however slow the machine is, and every invocation in flight has landed before the
    # store is read.
    with LambdaEmulator(latency=0.8, workers=2, hold_after=2) as emulator:
        proc = subprocess.Popen(
            lambda_args(url, store, emulator, "--concurrency", "2"),
            env=client_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while emulator.counts["ok"] < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the client dies; invocations in flight still finish
        proc.wait()
        assert emulator.counts["ok"] >= 2, (emulator.counts, proc.stderr.read().decode())
        emulator.release()
        assert emulator.wait_idle()
        done_before = {c.id for c in spec.chunks if ArtifactStore(store).read_manifest(c.output_file)}
        assert 2 <= len(done_before) < len(spec.chunks)
        invoked_before = len(emulator.invoked_chunks)
        rerun = subprocess.run(  # no straggler backups: this counts invocations (load can make a chunk straggle)
            lambda_args(url, store, emulator, "--concurrency", "4", "--no-backups"),
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert rerun.returncode == 0, rerun.stderr + rerun.stdout
        second = emulator.invoked_chunks[invoked_before:]
    assert not set(second) & done_before, (second, done_before)  # chunks already in S3 were not re-invoked
    assert sorted(second) == sorted({c.id for c in spec.chunks} - done_before)
    assert merged_frames(store, spec, tmp_path) == list(range(24))
    names = fsspec.filesystem("s3").find("renders/out/resume")
    assert not [n for n in names if ".tmp" in n]


def test_lambda_permanent_failure_names_the_chunk(s3, worker_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_FAKE_RENDER_FAIL_FRAMES", "9")
    spec = make_spec(frames=24, chunks=4, job_id="fail-job")
    url = upload_job(spec, "s3://renders/jobs/fail")
    with LambdaEmulator(workers=2) as emulator:
        run = subprocess.run(
            lambda_args(url, "s3://renders/out/fail", emulator),
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert run.returncode != 0
    assert "chunk 1" in run.stderr and "frame 9" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.render
def test_real_chromium_through_lambda_and_cloudrun(s3, worker_env, tmp_path: Path, monkeypatch) -> None:
    """Real Chromium renders in the Lambda handler processes and in the Cloud Run server."""
    monkeypatch.delenv("HELIOS_WORKER_RENDER")
    spec = make_spec(frames=24, chunks=3, job_id="real-job")
    url = upload_job(spec, "s3://renders/jobs/real")
    with LambdaEmulator(workers=2, timeout=120) as emulator:
        run = subprocess.run(
            lambda_args(url, "s3://renders/out/real-lambda", emulator, "--concurrency", "3"),
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr + run.stdout
    assert merged_frames("s3://renders/out/real-lambda", spec, tmp_path) == list(range(24))

    from fakes.gce_metadata import fake_metadata

    from cloud.test_cloudrun import _free_port

    with fake_metadata(monkeypatch) as metadata:
        port = _free_port()
        service = f"http://127.0.0.1:{port}"
        env = client_env(tmp_path, HELIOS_VERIFY_AUDIENCE=service, HELIOS_CERTS_URL=metadata.certs_url)
        server = subprocess.Popen(
            [HELIOS, "worker", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import httpx

            for _ in range(300):
                try:
                    if httpx.get(service + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
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
                    "--store",
                    "s3://renders/out/real-cloudrun",
                    "--quiet",
                    "--concurrency",
                    "3",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            server.terminate()
            server.wait(10)
    assert run.returncode == 0, run.stderr + run.stdout
    assert merged_frames("s3://renders/out/real-cloudrun", spec, tmp_path) == list(range(24))
    # both backends produced the same chunks, byte for byte (deterministic encoding)
    lam, crun = ArtifactStore("s3://renders/out/real-lambda"), ArtifactStore("s3://renders/out/real-cloudrun")
    for chunk in spec.chunks:
        assert lam.read_manifest(chunk.output_file).sha256 == crun.read_manifest(chunk.output_file).sha256
