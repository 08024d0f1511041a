"""Estimates: pricing arithmetic and overrides, the schedules (property-tested), predictions from a given
measurement, `helios job estimate --json` on a real tiny job (Chromium, ffmpeg), `--max-cost` refusing to
start over the estimate and stopping a run whose running cost passes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakes.jobs import RuntimeBackend, make_job
from fakes.renders import frame_index_render
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.commands.estimate import CostGuard, refuse_over_budget
from helios_kit.errors import SpecError
from helios_kit.estimate import (
    Estimate,
    Measurement,
    Sample,
    independent_schedule,
    predict,
    sample_starts,
    shared_schedule,
)
from helios_kit.pricing import Pricing, apply_overrides
from helios_kit.protocol import ChunkState, EventKind, ProgressEvent
from helios_kit.spec import load

durations = st.lists(st.floats(0.01, 1000), min_size=1, max_size=30)


# -- pricing ----------------------------------------------------------------------------------------------
def test_attempt_cost_is_billed_time_times_rates_plus_a_request() -> None:
    lam = Pricing(backend="lambda", memory_gb=2, gb_second_usd=0.00001, request_usd=0.0000002, billing_increment_s=1)
    assert lam.attempt_usd(2.2) == pytest.approx(3 * 2 * 0.00001 + 0.0000002)  # 2.2 s billed as 3 s
    run = Pricing(backend="cloudrun", memory_gb=2, vcpu=2, gb_second_usd=1, vcpu_second_usd=10, request_usd=0)
    assert run.attempt_usd(1.0) == pytest.approx(2 * 1 + 2 * 10)


def test_plugins_ship_pricing_and_local_has_none() -> None:
    from helios_kit.plugins import get_plugins

    plugins = get_plugins()
    assert plugins.backend("local").pricing() is None
    for name in ("lambda", "cloudrun"):
        pricing = plugins.backend(name).pricing()
        assert pricing is not None and pricing.backend == name and pricing.attempt_usd(60) > 0


def test_overrides_from_a_file_then_flags(tmp_path: Path) -> None:
    base = Pricing(backend="lambda", memory_gb=2, gb_second_usd=1)
    file = tmp_path / "prices.json"
    file.write_text(json.dumps({"memoryGb": 4, "request_usd": 0.5}))
    got = apply_overrides(base, file, ("memory-gb=8", "speed=2"))
    assert (got.memory_gb, got.request_usd, got.speed, got.gb_second_usd) == (8, 0.5, 2, 1)
    with pytest.raises(SpecError, match=r"^--price 'memory': expected FIELD=VALUE"):
        apply_overrides(base, None, ("memory",))
    with pytest.raises(SpecError, match=r"unknown pricing field 'ram'; known: memory_gb"):
        apply_overrides(base, None, ("ram=3",))
    with pytest.raises(SpecError, match=r"^pricing: memory_gb: "):
        apply_overrides(base, None, ("memory_gb=-1",))
    file.write_text("[1]")
    with pytest.raises(SpecError, match="expected a JSON object"):
        apply_overrides(base, file)


_FIELDS = [name for name in Pricing.model_fields if name not in ("backend", "concurrency", "billing_increment_s")]


@given(st.sampled_from(_FIELDS), st.floats(0, 1e6, allow_nan=False), st.sampled_from(["snake", "kebab", "camel"]))
def test_any_price_field_can_be_set_by_any_spelling(field: str, value: float, spelling: str) -> None:
    key = {"snake": field, "kebab": field.replace("_", "-"), "camel": Pricing.model_fields[field].alias}[spelling]
    if field == "speed" and value == 0:
        with pytest.raises(SpecError, match=r"^pricing: speed: "):
            apply_overrides(Pricing(backend="x"), None, (f"{key}={value!r}",))
        return
    assert getattr(apply_overrides(Pricing(backend="x"), None, (f"{key}={value!r}",)), field) == value


# -- schedules --------------------------------------------------------------------------------------------
@given(durations, st.integers(1, 10))
def test_independent_schedule_bounds(items: list[float], slots: int) -> None:
    wall = independent_schedule(items, slots)
    assert wall >= max(items) - 1e-6 and wall >= sum(items) / slots - 1e-6 and wall <= sum(items) + 1e-6
    assert independent_schedule(items, 1) == pytest.approx(sum(items))


@given(durations, st.integers(1, 10), st.floats(0.25, 4))
def test_shared_schedule_is_never_faster_than_independent_workers(items: list[float], slots: int, per: float) -> None:
    alone = independent_schedule(items, slots)
    shared = shared_schedule(items, slots, cores=2, cores_per_render=per)
    assert shared >= alone * (1 - 1e-6)
    assert shared_schedule(items, slots, cores=1000, cores_per_render=per) == pytest.approx(alone)
    # CPU bound: the renders running at once never use more than the 2 cores
    assert shared >= sum(items) * per / 2 * (1 - 1e-6)


def test_samples_spread_over_the_chunks(tmp_path: Path) -> None:
    spec = load(make_job(tmp_path / "job", frames=100, chunks=10))
    assert [c.id for c in sample_starts(spec, 3)] == [0, 4, 9]
    assert [c.id for c in sample_starts(spec, 1)] == [0]
    assert len(sample_starts(spec, 50)) == 10


# -- predictions ------------------------------------------------------------------------------------------
def _measurement() -> Measurement:
    """1 s startup, 0.1 s per frame, 0.01 s per fast-forwarded frame, one core per render, 2 cores."""
    samples = [
        Sample(start_frame=0, frames=10, wall_s=2.0, fast_forward_s=0.0, loop_s=1.0, cpu_s=2.0),
        Sample(start_frame=100, frames=10, wall_s=3.0, fast_forward_s=1.0, loop_s=1.0, cpu_s=3.0),
    ]
    return Measurement(samples=samples, process_s=0.0, cores=2)


def test_local_prediction_shares_the_cores(tmp_path: Path) -> None:
    spec = load(make_job(tmp_path / "job", frames=400, chunks=4))  # chunks of 100 frames at 0, 100, 200, 300
    measured = _measurement()
    assert measured.frame_s == pytest.approx(0.1) and measured.fast_forward_frame_s == pytest.approx(0.01)
    assert measured.startup_s == pytest.approx(1.0) and measured.cores_per_render == pytest.approx(1.0)
    one = predict(spec, measured, concurrency=1)
    assert one.chunk_seconds == pytest.approx([11, 12, 13, 14])
    assert one.wall_seconds == pytest.approx(50 + 0.1 * 4, rel=1e-3) and one.cost_usd == 0  # + merge
    two = predict(spec, measured, concurrency=2)
    four = predict(spec, measured, concurrency=4)  # 4 slots on 2 cores: never below 50 s of CPU over 2 cores
    assert two.wall_seconds == pytest.approx(26 + 0.4, rel=1e-3)  # 11 | 12, then 13 after 11, 14 after 12
    assert 25 + 0.4 - 1e-6 <= four.wall_seconds < two.wall_seconds
    assert (one.frames, one.sample_frames, one.backend) == (400, 20, "local")


def test_priced_prediction_costs_every_chunk(tmp_path: Path) -> None:
    spec = load(make_job(tmp_path / "job", frames=400, chunks=4))
    pricing = Pricing(backend="lambda", memory_gb=1, gb_second_usd=0.001, request_usd=0.01, startup_s=2, speed=2)
    got = predict(spec, _measurement(), pricing=pricing, concurrency=100)
    assert got.chunk_seconds == pytest.approx([7.5, 8, 8.5, 9])
    assert got.cost_usd == pytest.approx((7.5 + 8 + 8.5 + 9) * 0.001 + 4 * 0.01)
    assert got.wall_seconds == pytest.approx(9 + 0.4, rel=1e-3) and got.concurrency == 100
    with pytest.raises(SpecError, match=r"^--max-cost 0.01: the estimate is \$0.0730 on lambda .*; not started$"):
        refuse_over_budget(got, 0.01)
    refuse_over_budget(got, 1.0)


# -- the cost guard ---------------------------------------------------------------------------------------
def test_guard_stops_once_when_the_running_cost_passes_the_budget() -> None:
    now = [0.0]
    stops: list[int] = []
    pricing = Pricing(backend="x", memory_gb=1, gb_second_usd=0.1, request_usd=0.0, billing_increment_s=1)
    guard = CostGuard(pricing, 1.0, lambda: stops.append(1), clock=lambda: now[0])
    guard(ProgressEvent(kind=EventKind.STARTED, chunk_id=0, attempt=1))
    guard(ProgressEvent(kind=EventKind.STARTED, chunk_id=1, attempt=1))
    now[0] = 4.0
    guard(ProgressEvent(kind=EventKind.RENDERED, chunk_id=0))
    assert guard.running_cost() == pytest.approx(0.8) and not stops  # 0.4 spent + 0.4 running
    now[0] = 7.0  # 0.4 spent + 0.7 running
    guard(ProgressEvent(kind=EventKind.FRAMES, chunk_id=1, frames=3))  # frames reports re-check the budget
    assert stops == [1] and "passed --max-cost 1" in (guard.note() or "")
    guard(ProgressEvent(kind=EventKind.FRAMES, chunk_id=1, frames=4))
    assert stops == [1]
    free = CostGuard(None, 0.0, lambda: stops.append(2))
    free(ProgressEvent(kind=EventKind.STARTED, chunk_id=0))
    assert free.running_cost() == 0 and stops == [1]


def test_a_run_over_budget_is_stopped(tmp_path: Path) -> None:
    """JobManager + a backend whose attempts each cost one request of $1: with --max-cost 1.5 the second
    chunk's start passes the budget; the guard cancels the run (as the CLI does) before it renders."""
    from helios_kit.manager import JobManager
    from helios_kit.repository import InMemoryJobRepository
    from helios_kit.run import RunOptions

    job = make_job(tmp_path / "job", frames=16, chunks=4)
    manager = JobManager(InMemoryJobRepository())
    status = manager.create(
        str(job), backend=RuntimeBackend(frame_index_render, tmp_path / "ws"), options=RunOptions(concurrency=1)
    )
    stopped = threading.Event()

    def stop() -> None:
        manager.cancel(status.id)
        stopped.set()

    guard = CostGuard(Pricing(backend="runtime", request_usd=1.0), 1.5, stop)
    manager.sinks = (guard,)
    final = manager.run(status.id, status=status)
    report = manager.report(final.id)
    assert stopped.is_set() and final.state.value == "cancelled" and guard.spent == 2.0
    assert report is not None and report.rendered == 1 and report.count(ChunkState.CANCELLED) == 3


# -- the command, for real --------------------------------------------------------------------------------
def _helios(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HELIOS_HOME=str(tmp_path / "home"))
    env.pop("HELIOS_WORKER_RENDER", None)
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.render
def test_estimate_json_on_a_tiny_job(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=24, chunks=3)
    result = _helios("job", "estimate", str(job), "--json", "--sample-frames", "4", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert {"wallSeconds", "costUsd", "frames", "sampleFrames"} <= set(got)
    assert got["frames"] == 24 and got["sampleFrames"] == 12 and got["costUsd"] == 0 and got["wallSeconds"] > 0
    estimate = Estimate.model_validate(got)
    assert len(estimate.chunk_seconds) == 3 and estimate.backend == "local"
    assert not (tmp_path / "job" / "chunks").exists()  # samples render elsewhere

    priced = _helios(
        "job", "estimate", str(job), "--backend", "lambda", "--json", "--samples", "1", "--sample-frames", "2",
        "--price", "memory_gb=4", tmp_path=tmp_path,
    )  # fmt: skip
    assert priced.returncode == 0, priced.stderr
    got = json.loads(priced.stdout)
    assert got["costUsd"] > 0 and got["backend"] == "lambda" and got["sampleFrames"] == 2


@pytest.mark.render
def test_max_cost_refuses_to_start(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    result = _helios(
        "job", "run", str(job), "--backend", "lambda", "--function", "helios-worker", "--max-cost", "0.0000001",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --max-cost 1e-07: the estimate is $") and line.endswith("not started")
    assert not (tmp_path / "job" / "chunks").exists()
    bad = _helios("job", "estimate", str(job), "--backend", "nope", tmp_path=tmp_path)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr


def test_a_run_records_its_cost_so_far_for_backends_that_bill(tmp_path: Path) -> None:
    """The run record's costUsd (the dashboard's "cost so far") adds up each attempt at the backend's prices;
    a backend without prices (this machine) records none."""
    from helios_kit.manager import JobManager
    from helios_kit.repository import InMemoryJobRepository
    from helios_kit.run import RunOptions

    class Billed(RuntimeBackend):
        @classmethod
        def pricing(cls) -> Pricing:
            return Pricing(backend="billed", request_usd=0.25)

    job = make_job(tmp_path / "job", frames=16, chunks=4)
    for backend, expected in (
        (Billed(frame_index_render, tmp_path / "ws1"), 1.0),
        (RuntimeBackend(frame_index_render, tmp_path / "ws2"), None),
    ):
        manager = JobManager(InMemoryJobRepository())
        status = manager.create(str(job), backend=backend, options=RunOptions(concurrency=1, force=True))
        final = manager.run(status.id, status=status)
        assert final.state.value == "completed"
        assert manager.get(final.run_id).cost_usd == expected
