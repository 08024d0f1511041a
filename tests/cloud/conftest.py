"""Fixtures for the cloud backend tests: S3 on moto, a job uploaded to it, and the env for worker processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fakes.aws import make_bucket, moto_s3

TESTS_DIR = Path(__file__).resolve().parents[1]
logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """moto S3 on 127.0.0.1 with a `renders` bucket; yields the endpoint URL."""
    with moto_s3() as endpoint:
        make_bucket(endpoint, "renders")
        yield endpoint


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Worker processes import the fake render from tests/fakes, never look for Chromium, and keep their
    workspace (and composition cache) in the test's temp folder."""
    monkeypatch.setenv("HELIOS_WORKSPACE", str(tmp_path / "worker-workspace"))
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS_DIR}{os.pathsep}{path}" if path else str(TESTS_DIR))
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.renders:frame_index_render")
    monkeypatch.delenv("HELIOS_FAKE_RENDER_FAIL_FRAMES", raising=False)
    monkeypatch.delenv("HELIOS_FAKE_RENDER_SLEEP", raising=False)
