"""Cooperative runners on one machine: two `helios job run` processes on the same job split its chunks (no
chunk rendered twice, output frame-exact), and a runner killed with SIGKILL leaves leases that expire so the
next runner redoes its chunk. Renders are the counting fake (tests/fakes/counting.py): real ffmpeg videos,
no Chromium; interleavings are forced by the fake's gates (events), never by timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fakes.cloudjobs import HTML, make_spec, runner_env
from fakes.renders import decode_frame_indexes
from fakes.waiting import wait_for

from helios_kit.leases import Lease, LeaseHolder, LeaseStore
from helios_kit.spec import dump
from helios_kit.store import ArtifactStore


def start_runner(job: Path, env: dict[str, str], *more: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--quiet", "--retry-delay", "0.1", *more]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def renders(tmp_path: Path) -> list[tuple[int, int, int]]:
    log = tmp_path / "renders.log"
    if not log.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in log.read_text().splitlines() if line.strip()]  # type: ignore[misc]


def make_job(tmp_path: Path, frames: int, chunks: int, job_id: str) -> tuple[Path, object]:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "index.html").write_text(HTML)
    spec = make_spec(frames=frames, chunks=chunks, job_id=job_id)
    dump(spec, job_dir / "job.json")
    return job_dir / "job.json", spec


def test_two_runners_split_the_chunks(tmp_path: Path) -> None:
    job, spec = make_job(tmp_path, frames=32, chunks=8, job_id="coop-two")
    env = runner_env(tmp_path, HELIOS_FAKE_RENDER_GATE="2")  # a render waits until both runners render
    first = start_runner(job, env, "--concurrency", "2")
    second = start_runner(job, env, "--concurrency", "2")
    outs = [proc.communicate(timeout=300) for proc in (first, second)]
    for proc, (out, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, out + err
    done = renders(tmp_path)
    per_chunk = Counter(start for _runner, _worker, start in done)
    assert sorted(per_chunk) == [chunk.start_frame for chunk in spec.chunks]
    assert set(per_chunk.values()) == {1}, f"a chunk rendered twice: {per_chunk}"
    by_runner = Counter(runner for runner, _worker, _start in done)
    assert set(by_runner) == {first.pid, second.pid} and sum(by_runner.values()) == 8
    for proc, (out, _err) in zip((first, second), outs, strict=True):
        assert f"{by_runner[proc.pid]} rendered, {8 - by_runner[proc.pid]} skipped" in out
    merged = job.parent / spec.merge.output_file
    assert decode_frame_indexes(merged, 160, 120) == list(range(32))
    assert not list(job.parent.rglob("*.lease-*")), "leases left behind after a finished job"


def test_killed_runner_lease_expires_and_its_chunk_is_redone(tmp_path: Path) -> None:
    job, spec = make_job(tmp_path, frames=16, chunks=4, job_id="coop-kill")
    blocked = runner_env(tmp_path, HELIOS_FAKE_RENDER_BLOCK=str(tmp_path / "never"), HELIOS_LEASE_TTL="2")
    victim = start_runner(job, blocked, "--concurrency", "1")
    wait_for(lambda: len(renders(tmp_path)) == 1, 120, "the first runner's render started")
    _runner, worker, start = renders(tmp_path)[0]
    os.kill(victim.pid, signal.SIGKILL)  # the runner, then its worker (its own session): no cleanup at all
    os.kill(worker, signal.SIGKILL)
    victim.communicate(timeout=60)
    store = ArtifactStore(job.parent)
    lease = LeaseStore(store).current(spec.chunks[0].output_file)
    assert lease is not None and lease.holder.pid == victim.pid and start == spec.chunks[0].start_frame

    nxt = start_runner(job, runner_env(tmp_path, HELIOS_LEASE_TTL="2"), "--concurrency", "1")
    out, err = nxt.communicate(timeout=300)
    assert nxt.returncode == 0, out + err
    assert "4 chunks: 4 rendered, 0 skipped" in out
    again = [entry for entry in renders(tmp_path) if entry[0] == nxt.pid]
    assert sorted(entry[2] for entry in again) == [chunk.start_frame for chunk in spec.chunks]
    assert decode_frame_indexes(job.parent / spec.merge.output_file, 160, 120) == list(range(16))
    assert not list(job.parent.rglob("*.lease-*"))


def test_lease_generations_only_one_taker(tmp_path: Path) -> None:
    """Two holders racing for a chunk: one wins; an expired lease is taken over by the next generation; the
    loser of a takeover finds its lease lost when renewing."""
    store = ArtifactStore(tmp_path)
    one = LeaseStore(store, LeaseHolder(run_id="one"), ttl=30)
    two = LeaseStore(store, LeaseHolder(run_id="two"), ttl=30)
    first = one.acquire("chunks/c.mp4")
    assert isinstance(first, Lease) and first.generation == 0
    assert two.acquire("chunks/c.mp4") is None
    expired = first.model_copy(update={"expires_at": first.expires_at.replace(year=2000)})
    (tmp_path / "chunks" / "c.mp4.lease-000000").write_text(expired.model_dump_json(by_alias=True))
    taken = two.acquire("chunks/c.mp4")
    assert taken is not None and taken.generation == 1 and taken.holder.run_id == "two"
    assert one.acquire("chunks/c.mp4") is None
    assert not one.renew(first)
    two.release(taken, done=False)
    again = one.acquire("chunks/c.mp4")
    assert again is not None and again.generation == 3
    one.release(again, done=True)
    assert not list(tmp_path.rglob("*.lease-*"))


@pytest.mark.parametrize("ttl", ["2"])
def test_cli_rejects_bad_lease_ttl(tmp_path: Path, ttl: str) -> None:
    job, _spec = make_job(tmp_path, frames=4, chunks=1, job_id="coop-flag")
    proc = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--lease-ttl", "-" + ttl],
        env=runner_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--lease-ttl" in proc.stderr
