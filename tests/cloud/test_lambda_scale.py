"""Scale: 200 chunks at concurrency 100 through boto3 and the emulator: the client keeps 100 invocations in
flight (the emulator holds the first ones until 100 are in flight at once, so this is an event, not a timing)
and every chunk is committed. Uses benchmarks/lambda_scale.py, which prints the wall-time ratios."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "lambda_scale.py"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    for key in (
        "PYTHONPATH",
        "HELIOS_WORKER_RENDER",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_EC2_METADATA_DISABLED",
    ):
        monkeypatch.setenv(key, "")  # measure() sets them; monkeypatch restores them afterwards
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
