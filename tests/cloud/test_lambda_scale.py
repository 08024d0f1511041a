"""Scale: the Lambda fan-out through the real client and the emulator, checked by counts and events, never by
wall time (benchmarks/lambda_scale.py prints the times and ratios).

* the stand-in executor keeps 100 invocations in flight at once (the emulator holds the first ones until 100
  are in flight) and every chunk is committed;
* the emulator's handler hosts hold every invocation sent to them at once (a barrier of 50 handlers in one
  host process), so a fan-out measurement is not capped by the emulator's processes;
* `helios job run --backend lambda` with an S3 store (moto): the client keeps `--concurrency` invocations in
  flight; its S3 requests per chunk are its lease and the lease's delete; the handlers
  commit without a temporary object or a copy; a no-op re-run reads the job's done index (one GET, written
  by the fan-out from its workers' results) instead of the manifests, plus a few listings."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "lambda_scale.py"
ENV_KEYS = (
    "PYTHONPATH",
    "HELIOS_WORKER_RENDER",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SDK_UA_APP_ID",
)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    for key in ENV_KEYS:
        monkeypatch.setenv(key, "")  # the benchmark sets them; monkeypatch restores them afterwards
        monkeypatch.delenv(key)
    spec = importlib.util.spec_from_file_location("lambda_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_waves_client_fan_out(bench) -> None:
    stats = bench.measure(200, 100, 0.5, workers=2, handler="noop", gather=100)
    print(f"no-op handler: {stats['elapsed']:.2f} s, ratio to ideal {stats['ratio']:.2f}")
    assert stats["max_in_flight"] == 100  # the client really keeps 100 invocations in flight, never more


def test_two_waves_real_handler(bench) -> None:
    stats = bench.measure(200, 100, 0.5, workers=4, handler="worker", gather=100)
    print(f"real handler: {stats['elapsed']:.2f} s, ratio to ideal {stats['ratio']:.2f}")
    assert stats["committed"] == 200 and stats["max_in_flight"] == 100


def test_handler_hosts_hold_every_invocation(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """50 handlers wait for each other in ONE host process: only a host running them at once lets them pass
    (the process pool of `workers=1` would run them one by one, and each would fail at the barrier)."""
    bench.FanOut(1, 1, 0.0, 1, True).close()  # the environment: S3 stand-in, PYTHONPATH, dummy credentials
    monkeypatch.setenv("HELIOS_FAKE_BARRIER", "50")
    from fakes.drive import drive
    from fakes.lambda_emulator import LambdaEmulator
    from helios_lambda.backend import LambdaBackend, LambdaOptions

    from helios_kit.backends.base import ChunkContext
    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig

    spec = plan_job(RenderConfig(input="index.html", width=16, height=16, fps=30, frame_count=50), chunk_frames=1)
    context = ChunkContext(job_url="s3://bench/job.json", job_dir="/tmp", store_url="s3://bench/out")
    handler = "fakes.lambda_emulator:barrier_handler"
    with LambdaEmulator(handler=handler, threads=True, workers=1) as emulator:
        options = LambdaOptions(function=emulator.function_name, endpoint_url=emulator.endpoint_url, region="us-east-1")
        with LambdaBackend(options) as backend:
            report = drive(backend, spec, context, concurrency=50, retries=0)
        assert report.failed == [], report.results[report.failed[0]].stderr if report.failed else ""
        assert emulator.max_in_flight == 50 and emulator.counts["ok"] == 50


def test_fan_out_through_the_cli_counts_requests(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks, concurrency = 20, 10
    monkeypatch.setenv("HELIOS_LEASE_TTL", "600")  # no renewal during the run, however slow the machine
    fan = bench.FanOut(chunks, concurrency, 0.1, 1, True)
    from fakes.lambda_emulator import LambdaEmulator

    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            LambdaEmulator(latency=0.1, workers=1, threads=True, gather=concurrency, gather_timeout=600) as emulator,
        ):
            env = {**os.environ, "HELIOS_HOME": str(Path(tmp) / "home"), "AWS_SDK_UA_APP_ID": bench.CLIENT_APP}
            out = bench.fan_out(fan, emulator, env, tmp)
            import boto3

            listed = boto3.client("s3", endpoint_url=fan.s3.endpoint).list_objects_v2(Bucket="bench", Prefix="out/")
            left = [item["Key"] for item in listed.get("Contents", []) if ".lease-" in item["Key"]]
    finally:
        fan.close()
    print(out["client_text"], out["handlers_text"], out["noop_requests"], sep="\n")
    assert out["line"].startswith(f"{chunks} chunks: {chunks} rendered")
    assert out["max_in_flight"] == concurrency  # the client reached its concurrency (the emulator waited for it)
    client, handlers, noop = out["client"], out["handlers"], out["noop_requests"]
    # per chunk: its lease; the leases of committed chunks are deleted in one batch at the end of the run; no
    # manifest read (the fresh store's listing has none, and a first lease is not checked again: the worker
    # checks before it renders)
    assert client["PUT lease"] == chunks and "GET manifest" not in client
    assert 1 <= client["POST batch-delete"] <= 1 + 3  # the leases' batch (and the run's probe and marker)
    assert left == []  # the batch left no lease behind
    assert client.get("LIST", 0) <= 10 and "HEAD manifest" not in client  # listings per run, not per chunk
    assert handlers["PUT output"] == chunks and handlers["PUT manifest"] == chunks
    everything = {**client, **handlers}
    assert not {"PUT copy", "PUT commit-temp", "HEAD commit-temp"} & everything.keys()  # no temp object, no copy
    assert out["noop_line"].startswith(f"{chunks} chunks: 0 rendered, {chunks} skipped")
    # the fan-out wrote the job's done index once, from the manifests its workers reported committing
    assert client["PUT done-index"] == 1 and "GET manifest" not in client
    # a no-op re-run: the listings and one GET of the done index, which vouches for every manifest listed
    assert noop.get("GET done-index") == 1 and "GET manifest" not in noop and "PUT lease" not in noop
    assert "PUT done-index" not in noop  # it learned nothing new
    assert sum(noop.values()) <= 20  # not one request per chunk: the listings and the run's own objects
