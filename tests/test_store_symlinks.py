"""Outputs are checked after resolving symlinks: a symlink in the job folder (`chunks -> /elsewhere`) never
lets a chunk, a manifest or the merged output land outside the store; the refusal is one line naming the
path, and `helios job validate` / `helios job run` report it before anything renders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.jobs import make_job
from fakes.renders import bytes_render

from helios_kit.errors import StoreError
from helios_kit.store import ArtifactStore
from helios_kit.worker import WorkerRuntime

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A job folder whose `chunks` is a symlink to a folder outside it; returns (job file, outside)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    job = make_job(tmp_path / "job", frames=4, chunks=2)
    (job.parent / "chunks").symlink_to(outside)
    return job, outside


def payload(tmp_path: Path) -> Path:
    file = tmp_path / "payload.mp4"
    file.write_bytes(b"video")
    return file


def test_commit_through_an_escaping_symlink_is_refused_and_writes_nothing(layout, tmp_path: Path) -> None:
    job, outside = layout
    store = ArtifactStore(job.parent)
    with pytest.raises(StoreError) as caught:
        store.commit(payload(tmp_path), "chunks/chunk-0000.mp4", digest="d", job_id="j", frame_count=2)
    assert str(caught.value) == (
        f"store {job.parent}: chunks/chunk-0000.mp4 resolves to {outside / 'chunk-0000.mp4'}, "
        "outside the store (a symlink leads out of it)"
    )
    assert not caught.value.retryable
    assert list(outside.iterdir()) == []


def test_reads_are_refused_with_the_same_line_not_a_wrapped_one(layout) -> None:
    job, _ = layout
    store = ArtifactStore(job.parent)
    for call in (
        lambda: store.exists("chunks/chunk-0000.mp4"),
        lambda: store.read_manifest("chunks/chunk-0000.mp4"),
        lambda: store.is_complete("chunks/chunk-0000.mp4", "d"),
        lambda: store.local_path("chunks/chunk-0000.mp4"),
    ):
        with pytest.raises(StoreError, match=r"^store .*: chunks/chunk-0000\.mp4(\.done\.json)? resolves to "):
            call()


@pytest.mark.parametrize("target", ["file", "dangling"])
def test_a_symlinked_merged_output_is_refused(tmp_path: Path, target) -> None:
    root = tmp_path / "job"
    root.mkdir()
    outside = tmp_path / "outside.mp4"
    if target == "file":
        outside.write_bytes(b"")
    (root / "out.mp4").symlink_to(outside)
    with pytest.raises(StoreError, match=r": out\.mp4 resolves to .*outside\.mp4, outside the store"):
        ArtifactStore(root).commit(payload(tmp_path), "out.mp4", digest="d", job_id="j", frame_count=1)
    assert not outside.exists() or outside.read_bytes() == b""


def test_a_symlink_that_stays_inside_the_store_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "job"
    (root / "real-chunks").mkdir(parents=True)
    (root / "chunks").symlink_to(root / "real-chunks")
    store = ArtifactStore(root)
    store.commit(payload(tmp_path), "chunks/a.mp4", digest="d", job_id="j", frame_count=1)
    assert (root / "real-chunks" / "a.mp4").read_bytes() == b"video"
    assert store.is_complete("chunks/a.mp4", "d")
    store.check_confined(["chunks/a.mp4", "out.mp4"])


def test_a_symlinked_store_root_is_its_own_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    store = ArtifactStore(tmp_path / "link")
    store.commit(payload(tmp_path), "chunks/a.mp4", digest="d", job_id="j", frame_count=1)
    assert (tmp_path / "real" / "chunks" / "a.mp4").is_file()


def test_a_worker_refuses_for_good_and_writes_nothing(layout, tmp_path: Path) -> None:
    job, outside = layout
    result = WorkerRuntime(tmp_path / "ws", render=bytes_render).run(str(job), 0)
    assert not result.ok and not result.retryable
    assert "chunks/chunk-0000.mp4" in result.stderr and "outside the store" in result.stderr
    assert list(outside.iterdir()) == []


def helios(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HELIOS_HOME=str(cwd / "home"), HELIOS_WORKER_RENDER="fakes.renders:bytes_render")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_job_validate_and_run_report_it_before_rendering(layout, tmp_path: Path, command) -> None:
    job, outside = layout
    result = helios("job", command, str(job), cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: store {job.parent}: chunks/chunk-0000.mp4 resolves to {outside / 'chunk-0000.mp4'}, "
        "outside the store (a symlink leads out of it)"
    ]
    assert list(outside.iterdir()) == []
    assert not (job.parent / "out.mp4").exists()


def test_job_run_into_another_store_is_not_affected(layout, tmp_path: Path) -> None:
    job, outside = layout
    result = helios("job", "run", str(job), "--store", str(tmp_path / "store"), "--no-merge", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "store" / "chunks" / "chunk-0001.mp4").is_file()
    assert list(outside.iterdir()) == []
