"""The dashboard's HTTP side without a browser: JSON API, cancel refused without the page's token or from
another origin, HTTP ranges on the preview, views (grid states, frames/s, ETA), a taken port as one line,
and `helios dashboard --repository` over a repository a plugin registered."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from test_runs import plugin_repository  # noqa: F401 - the fixture

from helios_kit.cli import cli
from helios_kit.commands.dashboard import build_server
from helios_kit.dashboard.app import create_app
from helios_kit.dashboard.server import DashboardServer, bind
from helios_kit.dashboard.views import detail, summarize
from helios_kit.manager import JobManager
from helios_kit.repository import (
    ChunkState,
    ChunkStatus,
    InMemoryJobRepository,
    JobResultInfo,
    JobState,
    JobStatus,
    SQLiteJobRepository,
    this_host,
    utcnow,
)

TOKEN = "test-token"


def live_run(**changes: object) -> JobStatus:
    now = utcnow()
    status = JobStatus(
        id="live",
        state=JobState.RUNNING,
        pid=os.getpid(),
        host=this_host(),
        started_at=now - timedelta(seconds=10),
        heartbeat_at=now,
        total_chunks=4,
        total_frames=40,
        done_frames=10,
        rendered_frames=10,
        chunks=[ChunkStatus(id=i, frames=10) for i in range(4)],
    )
    status.chunks[0].state = ChunkState.RENDERED
    status.chunks[1].state, status.chunks[1].retrying = ChunkState.RUNNING, True
    status.chunks[2].state, status.chunks[2].error = ChunkState.FAILED, "chunk 2 failed after 3 attempts: boom"
    return status.model_copy(update=changes)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[httpx.Client, JobManager]]:
    """The app served by uvicorn on a free loopback port, and an HTTP client for it."""
    manager = JobManager(SQLiteJobRepository(tmp_path / "jobs.db"))
    server = DashboardServer(create_app(manager, token=TOKEN), bind("127.0.0.1", 0)).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            yield http, manager
    finally:
        server.stop()


def test_views_grid_states_fps_and_eta() -> None:
    status = live_run()
    now = status.started_at + timedelta(seconds=10)
    summary = summarize(status, now)
    assert summary.fps == 1.0 and summary.eta_seconds == 30.0 and summary.cost_usd is None
    leased = detail(status, leased=lambda chunk: chunk.id == 3, now=now)
    assert [c.state for c in leased.chunks] == ["done", "retrying", "failed", "leased"]
    assert detail(status, now=now).chunks[3].state == "pending"
    done = summarize(status.model_copy(update={"state": JobState.COMPLETED, "finished_at": now}), now)
    assert done.eta_seconds is None and done.fps == 1.0


def test_api_jobs_and_runs(client: tuple[httpx.Client, JobManager]) -> None:
    http, manager = client
    first, second = live_run(), live_run()
    second.created_at = first.created_at + timedelta(seconds=1)
    manager.repository.save(first)
    manager.repository.save(second)
    jobs = http.get("/api/jobs").json()["jobs"]
    assert [job["jobId"] for job in jobs] == ["live"]
    assert [run["runId"] for run in jobs[0]["runs"]] == [second.run_id, first.run_id]
    (newest,) = http.get("/api/jobs?limit=1").json()["jobs"]
    assert [run["runId"] for run in newest["runs"]] == [second.run_id]
    run = http.get("/api/runs/live").json()  # a job id: its latest run
    assert run["runId"] == second.run_id and [c["state"] for c in run["chunks"]][:3] == ["done", "retrying", "failed"]
    assert http.get(f"/api/runs/{first.run_id}").json()["runId"] == first.run_id
    missing = http.get("/api/runs/ghost")
    assert missing.status_code == 404 and missing.json() == {"error": "no job with id 'ghost' (see `helios job list`)"}
    assert http.get("/api/jobs", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


def test_cancel_needs_the_token_and_the_same_origin(client: tuple[httpx.Client, JobManager]) -> None:
    http, manager = client
    run = live_run()
    manager.repository.save(run)
    url = f"/api/runs/{run.run_id}/cancel"
    refused = [
        http.post(url),
        http.post(url, headers={"x-helios-token": "wrong"}),
        http.post(url, headers={"x-helios-token": TOKEN, "origin": "http://evil.example"}),
        http.post(url, headers={"x-helios-token": TOKEN, "sec-fetch-site": "cross-site"}),
    ]
    assert [answer.status_code for answer in refused] == [403] * 4
    assert "cross-origin request from http://evil.example refused" in refused[2].json()["error"]
    assert not manager.repository.cancel_requested(run.run_id)
    accepted = http.post(url, headers={"x-helios-token": TOKEN, "origin": str(http.base_url).rstrip("/")})
    assert accepted.status_code == 200 and accepted.json() == {"runId": run.run_id, "state": "running"}
    assert manager.repository.cancel_requested(run.run_id)  # the owner (alive) stops on its next poll
    assert http.get(f"/api/runs/{run.run_id}").json()["cancelRequested"] is True


def test_preview_serves_ranges(client: tuple[httpx.Client, JobManager], tmp_path: Path) -> None:
    http, manager = client
    video = tmp_path / "out.mp4"
    video.write_bytes(bytes(range(256)) * 40)
    run = live_run(state=JobState.COMPLETED, result=JobResultInfo(output=str(video), frames=40, duration=1.3))
    manager.repository.save(run)
    assert http.get(f"/api/runs/{run.run_id}").json()["preview"] == f"/runs/{run.run_id}/preview.mp4"
    part = http.get(f"/runs/{run.run_id}/preview.mp4", headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == (bytes(range(256)) * 40)[100:200]
    assert part.headers["content-range"] == "bytes 100-199/10240"
    whole = http.get(f"/runs/{run.run_id}/preview.mp4")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes" and len(whole.content) == 10240
    assert http.get(f"/runs/{run.run_id}/chunks/0/thumb.jpg").status_code == 404  # no output recorded


def test_a_taken_port_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["dashboard", "--port", str(port)])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen: Address already in use"
    ]


def test_dashboard_reads_a_plugin_repository(plugin_repository) -> None:  # noqa: F811
    shared = plugin_repository()
    assert isinstance(shared, InMemoryJobRepository)
    shared.save(live_run())
    server = build_server("127.0.0.1", 0, "shared-test").start()
    try:
        jobs = httpx.get(server.url + "api/jobs", timeout=60).json()["jobs"]
    finally:
        server.stop()
    assert [job["jobId"] for job in jobs] == ["live"] and plugin_repository.instances == 2


def test_thumbnails_and_copies_from_a_remote_store(tmp_path: Path) -> None:
    """A chunk output behind an fsspec URL (memory://) is copied once per version and gives a JPEG still."""
    import subprocess

    import fsspec

    from helios_kit.dashboard.media import MediaCache
    from helios_kit.render.encode import find_ffmpeg

    video = tmp_path / "chunk.mp4"
    source = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-frames:v", "3", "-pix_fmt", "yuv420p"]
    subprocess.run([find_ffmpeg(), "-v", "error", *source, str(video)], check=True)
    url = f"memory://dashboard-test-{os.getpid()}/chunks/chunk-0000.mp4"
    with fsspec.open(url, "wb") as out:
        out.write(video.read_bytes())
    media = MediaCache(tmp_path / "cache")
    copy = media.local_file(url)
    assert copy.read_bytes() == video.read_bytes() and media.local_file(url) == copy
    still = media.thumbnail(url)
    assert still.read_bytes()[:2] == b"\xff\xd8" and media.thumbnail(url) == still
    with pytest.raises(Exception, match="not found"):
        media.local_file(url + ".missing")


def test_a_lease_beside_a_pending_chunk_shows_leased(client: tuple[httpx.Client, JobManager], tmp_path: Path) -> None:
    http, manager = client
    run = live_run()
    run.chunks[3].output_file = str(tmp_path / "chunks" / "chunk-0003.mp4")
    manager.repository.save(run)
    assert http.get(f"/api/runs/{run.run_id}").json()["chunks"][3]["state"] == "pending"
    from helios_kit.leases import LeaseStore
    from helios_kit.store import ArtifactStore

    (tmp_path / "chunks").mkdir()
    leases = LeaseStore(ArtifactStore(str(tmp_path)), ttl=60)
    lease = leases.acquire("chunks/chunk-0003.mp4")  # another runner's lease, as cooperative runs take them
    assert lease is not None
    assert http.get(f"/api/runs/{run.run_id}").json()["chunks"][3]["state"] == "leased"
    leases.release(lease, done=False)
    assert http.get(f"/api/runs/{run.run_id}").json()["chunks"][3]["state"] == "pending"
