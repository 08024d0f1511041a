"""`helios batch --backend lambda` like `helios job run --backend lambda`: the Lambda emulator on 127.0.0.1 runs
the real handler in worker processes (the fake frame-index render, so no Chromium in them), the batch root is
the store they commit to, the merges run here; a re-run invokes nothing; a straggling invocation gets a backup
(on by default for lambda), judged against the whole batch's chunks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fakes.aws import DUMMY_ENV
from fakes.lambda_emulator import LambdaEmulator
from fakes.renders import decode_frame_indexes

TESTS_DIR = Path(__file__).resolve().parent
PAGE = '<!doctype html><meta name="helios" content=\'{"width": 64, "height": 48, "fps": 10}\'><p>card</p>'


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in DUMMY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HELIOS_WORKSPACE", str(tmp_path / "worker-workspace"))
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS_DIR}{os.pathsep}{path}" if path else str(TESTS_DIR))
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.renders:frame_index_render")
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))


def batch_argv(emulator: LambdaEmulator) -> list[str]:
    argv = [sys.executable, "-m", "helios_kit.cli", "batch", "card.html", "rows.csv", "-o", "out/{id}.mp4"]
    argv += ["--frame-count", "4", "--chunk-frames", "2", "--backend", "lambda", "--retry-delay", "0.1"]
    argv += ["--function", emulator.function_name, "--endpoint-url", emulator.endpoint_url]
    return [*argv, "--region", "us-east-1"]


def test_batch_on_the_lambda_backend(worker_env: None, tmp_path: Path) -> None:
    (tmp_path / "card.html").write_text(PAGE)
    (tmp_path / "rows.csv").write_text("id,name\na,Ada\nb,Bo\nc,Cy\n")
    with LambdaEmulator(workers=2) as emulator:
        argv = [*batch_argv(emulator), "--no-backups"]  # the invocations are counted: no second attempt by design
        first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr
        assert "3 videos: 3 rendered, 0 skipped (up to date), 0 failed" in first.stdout
        assert sorted(emulator.invoked_chunks) == [0, 0, 0, 1, 1, 1]  # 2 chunks per video, each invoked once
        for name in ("a", "b", "c"):
            assert decode_frame_indexes(tmp_path / "out" / f"{name}.mp4", 64, 48) == [0, 1, 2, 3]
        again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        assert "3 videos: 0 rendered, 3 skipped (up to date), 0 failed" in again.stdout
        assert len(emulator.invoked_chunks) == 6


def test_a_straggling_invocation_in_a_batch_gets_a_backup_that_wins(worker_env: None, tmp_path: Path) -> None:
    """Four videos of 2 chunks: the first invocation of a chunk 1 (whichever video's comes first) hangs; once
    6 of the batch's 8 chunks are done and it has run 1.5 x their median, a backup renders it."""
    (tmp_path / "card.html").write_text(PAGE)
    (tmp_path / "rows.csv").write_text("id,name\na,Ada\nb,Bo\nc,Cy\nd,Di\n")
    with LambdaEmulator(workers=2, first_delays={1: 600.0}) as emulator:
        done = subprocess.run(batch_argv(emulator), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        invoked = Counter(emulator.invoked_chunks)
        answered = emulator.counts["ok"]
    assert done.returncode == 0, done.stderr
    assert "4 videos: 4 rendered, 0 skipped (up to date), 0 failed" in done.stdout
    # the hanging chunk 1 was rendered by its backup; a chunk that waited under load for one of the emulator's
    # two worker processes may straggle by the rule too and get a backup of its own: at most one per chunk
    assert invoked[1] >= 5 and invoked[0] >= 4 and sum(invoked.values()) <= 16, invoked
    assert answered >= 8  # every chunk at least once (merges run here); the hanging invocation never answered
    for name in ("a", "b", "c", "d"):
        assert decode_frame_indexes(tmp_path / "out" / f"{name}.mp4", 64, 48) == [0, 1, 2, 3]
