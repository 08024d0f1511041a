"""The lambda backend against the Invoke-API emulator (real boto3 client, real handler in worker processes),
with the job and the store in moto S3. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest
from fakes.cloudjobs import make_spec, upload_job
from fakes.drive import drive
from fakes.lambda_emulator import LambdaEmulator
from fakes.renders import decode_frame_indexes

from helios_kit.backends.base import ChunkContext
from helios_kit.composition.deps import sha256_file as file_sha256
from helios_kit.plugins import get_plugins, reset_plugins
from helios_kit.stitch import stitch
from helios_kit.store import ArtifactStore

STORE = "s3://renders/out/cloud-job"


def backend_for(emulator: LambdaEmulator, **options):
    reset_plugins()
    cls = get_plugins().backend("lambda")  # through the entry point, as `helios job run --backend lambda`
    return cls(
        cls.Options(function=emulator.function_name, endpoint_url=emulator.endpoint_url, region="us-east-1", **options)
    )


def context(job_url: str, store: str = STORE, force: bool = False) -> ChunkContext:
    return ChunkContext(job_url=job_url, job_dir=".", store_url=store, force=force)


def merge_from_store(spec, store_url: str, tmp: Path) -> list[int]:
    store = ArtifactStore(store_url)
    local = [store.fetch(chunk.output_file, tmp / chunk.output_file) for chunk in spec.chunks]
    out = tmp / "out.mp4"
    stitch(local, out, expected_frames=spec.config.frame_count)
    return decode_frame_indexes(out, spec.config.width, spec.config.height)


@pytest.fixture
def job(s3, worker_env):
    spec = make_spec()
    return spec, upload_job(spec)


def test_plugin_is_listed() -> None:
    reset_plugins()
    info = {i.name: i for i in get_plugins().plugin_infos()}
    assert info["lambda"].backends == ["lambda"] and info["lambda"].error is None
    assert "helios-lambda" in info["lambda"].origin


def test_end_to_end_rerun_skips_and_merge_is_frame_exact(job, tmp_path: Path) -> None:
    spec, url = job
    with LambdaEmulator(workers=2) as emulator, backend_for(emulator) as backend:
        # a client that dies after two chunks: only those reach the store
        first = drive(backend, spec, context(url), chunks=spec.chunks[:2])
        assert not first.failed
        # the re-run skips them (the store says they are done) and renders the rest
        second = drive(backend, spec, context(url), concurrency=4)
        assert not second.failed, {cid: r.stderr for cid, r in second.results.items()}
        skipped = sorted(cid for cid, r in second.results.items() if r.status == "skipped")
        assert skipped == [0, 1]
        assert emulator.counts["ok"] == 6
    fs = fsspec.filesystem("s3")
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find("renders/out/cloud-job"))
    assert len(names) == 8 and all(".tmp" not in n for n in names)
    assert merge_from_store(spec, STORE, tmp_path) == list(range(spec.config.frame_count))


def test_transient_faults_complete(job, tmp_path: Path) -> None:
    spec, url = job
    with (
        LambdaEmulator(throttle_rate=0.15, failure_rate=0.15, workers=2, seed=5) as emulator,
        backend_for(emulator, throttle_attempts=2) as backend,
    ):
        report = drive(backend, spec, context(url), concurrency=4, retries=10)
        assert not report.failed, {cid: r.stderr for cid, r in report.results.items()}
        assert emulator.counts["throttled"] > 0 and emulator.counts["failed"] > 0, emulator.counts
    print(f"faults: {dict(emulator.counts)}, attempts {report.attempts}")
    assert merge_from_store(spec, STORE, tmp_path) == list(range(spec.config.frame_count))


def test_permanent_failure_names_the_chunk(job, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, url = job
    monkeypatch.setenv("HELIOS_FAKE_RENDER_FAIL_FRAMES", "13")  # inside chunk 2 (frames 12-17)
    with LambdaEmulator(workers=2) as emulator, backend_for(emulator) as backend:
        report = drive(backend, spec, context(url), concurrency=4, retries=3)
    assert report.failed == [2]
    result = report.results[2]
    assert not result.retryable and report.attempts[2] == 1
    assert result.chunk_id == 2 and "frame 13" in result.stderr


def test_twice_at_once_commits_one_valid_chunk(job) -> None:
    spec, url = job
    chunk = spec.chunks[1]
    with LambdaEmulator(workers=2) as emulator, backend_for(emulator) as backend, ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda _: backend.run_chunk(spec, chunk, context(url, force=True), cancel=threading.Event()), range(2)
            )
        )
    assert all(r.status == "ok" for r in results), results
    store = ArtifactStore(STORE)
    manifest = store.read_manifest(chunk.output_file)
    local = Path(store.fetch(chunk.output_file, Path("/tmp") / f"twice-{time.monotonic_ns()}.mp4"))
    assert manifest is not None and manifest.sha256 == file_sha256(local) and manifest.size == local.stat().st_size
    fs = fsspec.filesystem("s3")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find("renders/out/cloud-job")) == [
        Path(chunk.output_file).name,
        Path(chunk.output_file).name + ".done.json",
    ]
    local.unlink()


def test_unknown_function_and_bad_payloads(job) -> None:
    spec, url = job
    with LambdaEmulator(workers=1) as emulator:
        with backend_for(emulator) as backend:
            missing = backend.run_chunk(
                spec, spec.chunks[0], context("s3://renders/jobs/nope.json"), cancel=threading.Event()
            )
        assert not missing.ok and not missing.retryable and "not found" in missing.stderr
        cls = type(backend)
        with cls(cls.Options(function="missing-fn", endpoint_url=emulator.endpoint_url, region="us-east-1")) as other:
            result = other.run_chunk(spec, spec.chunks[0], context(url), cancel=threading.Event())
        assert not result.ok and not result.retryable
        assert "ResourceNotFoundException" in result.stderr and "missing-fn" in result.stderr


def test_throttled_until_give_up_is_retryable(job) -> None:
    spec, url = job
    with (
        LambdaEmulator(throttle_rate=1.0, workers=1) as emulator,
        backend_for(emulator, throttle_attempts=3) as backend,
    ):
        result = backend.run_chunk(spec, spec.chunks[0], context(url), cancel=threading.Event())
    assert not result.ok and result.retryable and "throttled" in result.stderr
    assert emulator.counts["throttled"] == 3 and emulator.counts["invoked"] == 0


def test_function_timeout_is_retryable(job, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, url = job
    monkeypatch.setenv("HELIOS_FAKE_RENDER_SLEEP", "3")
    with LambdaEmulator(timeout=1.0, workers=1) as emulator, backend_for(emulator) as backend:
        result = backend.run_chunk(spec, spec.chunks[0], context(url), cancel=threading.Event())
    assert not result.ok and result.retryable and "timed out" in result.stderr.lower()


def test_long_chunk_warning(job, caplog: pytest.LogCaptureFixture) -> None:
    spec, url = job
    with (
        LambdaEmulator(workers=1) as emulator,
        backend_for(emulator, render_fps=0.001) as backend,
        caplog.at_level(logging.WARNING, logger="helios.lambda"),
    ):
        backend.check_chunk(spec, spec.chunks[0], context(url))
        backend.check_chunk(spec, spec.chunks[1], context(url))
    warnings = [r.getMessage() for r in caplog.records if "900 s limit" in r.getMessage()]
    assert len(warnings) == 1 and "chunk 0" in warnings[0] and "--chunk-frames" in warnings[0]


def test_backend_requires_function() -> None:
    from helios_lambda.backend import LambdaBackend, LambdaConfigError

    with pytest.raises(LambdaConfigError, match="--function"):
        LambdaBackend()


def test_handler_bad_event_and_deadline(tmp_path: Path, worker_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from helios_lambda import handler as module

    bad = module.handler({"jobUrl": "x"}, None)
    assert bad["status"] == "failed" and not bad["retryable"] and "chunkId" in bad["stderr"]
    assert module.handler({"body": "not json"}, None)["status"] == "failed"

    from fakes.cloudjobs import HTML

    (tmp_path / "index.html").write_text(HTML)
    (tmp_path / "job.json").write_text(json.dumps(make_spec().model_dump(mode="json", by_alias=True)))
    monkeypatch.setenv("HELIOS_FAKE_RENDER_SLEEP", "0.5")
    monkeypatch.setattr(module, "DEADLINE_MARGIN_S", 0.0)

    class ShortContext:
        def get_remaining_time_in_millis(self) -> int:
            return 200

    def slow_render(config, *, cancel, **kwargs):
        cancel.wait(60)  # until the handler's 0.2 s deadline cancels it (a loaded machine may be late)
        return None

    monkeypatch.setattr(module, "_runtime", module.WorkerRuntime(tmp_path / "ws", render=slow_render))
    result = module.handler({"jobUrl": str(tmp_path / "job.json"), "chunkId": 0}, ShortContext())
    assert result["status"] == "timed_out" and result["retryable"] and "time limit" in result["stderr"]
    monkeypatch.setattr(module, "_runtime", None)


def test_cancel_and_timeout_do_not_wait_for_the_invocation(job, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, url = job
    monkeypatch.setenv("HELIOS_FAKE_RENDER_SLEEP", "20")
    with LambdaEmulator(workers=2) as emulator, backend_for(emulator) as backend:
        cancel = threading.Event()

        def cancel_once_invoked() -> None:  # the invocation has reached the function: now cancel the call
            deadline = time.monotonic() + 60
            while emulator._in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            cancel.set()

        threading.Thread(target=cancel_once_invoked, daemon=True).start()
        result = backend.run_chunk(spec, spec.chunks[0], context(url), cancel=cancel)
        assert result.status == "cancelled" and not result.retryable
        assert emulator._in_flight >= 1  # the call returned while its invocation was still running (20 s)
        # a timeout, whether or not the request reached the function by then: the answer is not awaited
        result = backend.run_chunk(spec, spec.chunks[1], context(url), cancel=threading.Event(), timeout=0.5)
        assert result.status == "timed_out" and result.retryable and "no answer within 0.5 s" in result.stderr
