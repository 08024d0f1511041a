"""Store hygiene: temporaries of interrupted commits are swept by the next run and by `helios store gc`,
never a commit still in flight (younger than the grace period), never anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
from fakes.aws import make_bucket, moto_s3
from fakes.jobs import RuntimeBackend, make_job
from fakes.renders import frame_index_render

from helios_kit.run import RunOptions, execute_job
from helios_kit.spec import load
from helios_kit.store import ArtifactStore


def temporary(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an upload")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def tmp_name(rel: str) -> str:
    return f"{rel}.tmp-{uuid.uuid4().hex}"


def test_the_next_run_sweeps_its_own_old_temporaries_only(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=6, chunks=2)
    root = job.parent
    old_chunk = temporary(root / tmp_name("chunks/chunk-0000.mp4"), age_s=3600)
    old_manifest = temporary(root / tmp_name("chunks/chunk-0001.mp4.done.json"), age_s=3600)
    in_flight = temporary(root / tmp_name("chunks/chunk-0001.mp4"))  # another runner's, just started
    not_ours = temporary(root / tmp_name("chunks/other-job.mp4"), age_s=3600)
    user_file = temporary(root / "chunks" / "notes.tmp-old", age_s=3600)
    report = execute_job(load(job), str(job), root, RuntimeBackend(frame_index_render, tmp_path / "ws"), RunOptions())
    assert report.ok, report.summary_line()
    assert not old_chunk.exists() and not old_manifest.exists()
    assert in_flight.exists() and not_ours.exists() and user_file.exists()


def test_helios_store_gc_sweeps_a_folder(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old = temporary(store / tmp_name("a/b/out.mp4"), age_s=3600)
    probe = temporary(store / f".helios-probe-{uuid.uuid4().hex}.tmp", age_s=3600)
    young = temporary(store / tmp_name("a/c.mp4"))
    kept = temporary(store / "a" / "c.mp4", age_s=3600)
    result = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "store", "gc", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"2 temporaries removed from {store}"
    assert not old.exists() and not probe.exists() and young.exists() and kept.exists()
    everything = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "store", "gc", str(store), "--older-than", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert everything.returncode == 0 and not young.exists() and kept.exists()


def test_gc_on_s3_removes_interrupted_uploads(tmp_path: Path) -> None:
    with moto_s3() as endpoint:
        make_bucket(endpoint, "renders")
        fs = fsspec.filesystem("s3")
        fs.invalidate_cache()
        fs.pipe("renders/job/chunks/chunk-0000.mp4", b"done")
        fs.pipe(f"renders/job/{tmp_name('chunks/chunk-0001.mp4')}", b"half")
        store = ArtifactStore("s3://renders/job/")
        assert store.sweep_temporaries(older_than_s=3600) == []  # just written: maybe in flight
        removed = store.sweep_temporaries(older_than_s=0)
        assert len(removed) == 1 and removed[0].startswith("chunks/chunk-0001.mp4.tmp-")
        fs.invalidate_cache()
        assert fs.exists("renders/job/chunks/chunk-0000.mp4")
        assert fs.find("renders/job/") == ["renders/job/chunks/chunk-0000.mp4"]
