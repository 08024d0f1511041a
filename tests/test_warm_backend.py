"""The local backend's warm workers with real Chromium and ffmpeg: one worker process and one Chromium serve
consecutive chunks (frame-exact), other stdout lines coexist with the result lines, a cancel kills the
worker's whole group and the slot's next chunk starts a new worker, and closing the backend leaves nothing."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.jobs import make_job, tagged_processes, wait_no_tagged_processes
from fakes.renders import decode_frame_indexes
from fakes.waiting import wait_for
from test_warm_isolation import leak_site, leaks_seen

from helios_kit.backends.base import ChunkContext
from helios_kit.backends.local import LocalBackend, LocalOptions
from helios_kit.planner import plan_job
from helios_kit.protocol import WorkerStatus
from helios_kit.spec import RenderConfig, dump, load
from helios_kit.worker.lines import RESULT_MARK, WorkerTask, parse_result, task_line

W, H = 160, 120


@pytest.fixture
def tag(monkeypatch) -> Iterator[str]:
    value = f"helios-warm-{uuid.uuid4().hex}"
    monkeypatch.setenv("HELIOS_TEST_PROCESS_TAG", value)
    monkeypatch.delenv("HELIOS_WORKER_RENDER", raising=False)
    yield value
    assert wait_no_tagged_processes(value, timeout=60) == []


def chromium_pids(tag: str) -> set[int]:
    """The main Chromium processes (their parent is not a Chromium: renderers come and go with tabs)."""
    browsers = {pid for pid, command in tagged_processes(tag) if "chrom" in command or "headless" in command}
    return {pid for pid in browsers if _parent(pid) not in browsers}


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return 0


def group_of(pid: int) -> set[int]:
    """Live (non-zombie) processes in process group `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pid:
            found.add(int(entry))
    return found


def context_for(job: Path) -> ChunkContext:
    return ChunkContext(job_url=str(job), job_dir=str(job.parent), store_url=str(job.parent))


@pytest.mark.render
def test_one_worker_and_one_chromium_serve_consecutive_chunks(tmp_path: Path, tag: str) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    spec = load(job)
    lines: list[str] = []
    backend = LocalBackend(LocalOptions(warm=True))
    backend.on_worker_line = lambda chunk, line: lines.append(line)  # type: ignore[method-assign]
    try:
        browsers: list[set[int]] = []
        for chunk in spec.chunks:
            result = backend.run_chunk(spec, chunk, context_for(job), cancel=threading.Event())
            assert result.status is WorkerStatus.OK, result.stderr
            browsers.append(chromium_pids(tag))
        assert backend._pool is not None and backend._pool.started == 1
        assert browsers[0] and browsers[0] == browsers[1] == browsers[2]  # the same Chromium processes
    finally:
        backend.close()
    assert not any(line.startswith(RESULT_MARK) for line in lines)
    for chunk in spec.chunks:
        indexes = decode_frame_indexes(tmp_path / "job" / chunk.output_file, W, H)
        assert indexes == list(range(chunk.start_frame, chunk.end_frame))


@pytest.mark.render
def test_cancel_kills_the_worker_group_and_the_next_chunk_starts_cold(tmp_path: Path, tag: str) -> None:
    job = make_job(tmp_path / "job", frames=12_000, chunks=2)  # far more than can render before the cancel
    spec = load(job)
    backend = LocalBackend(LocalOptions(warm=True))
    try:
        cancel = threading.Event()
        results = []
        thread = threading.Thread(
            target=lambda: results.append(backend.run_chunk(spec, spec.chunks[1], context_for(job), cancel=cancel))
        )
        thread.start()
        while not chromium_pids(tag):  # the worker's Chromium is up: the chunk is rendering
            assert thread.is_alive()
            threading.Event().wait(0.05)
        assert backend._pool is not None
        (worker,) = backend._pool._busy
        cancel.set()
        thread.join()
        assert results[0].status is WorkerStatus.CANCELLED
        # the worker, its Chromium and its ffmpeg are gone (SIGKILL is delivered asynchronously)
        wait_for(lambda: not group_of(worker.pid), 60, "the worker's process group to exit")

        small_job = make_job(tmp_path / "small", frames=4, chunks=1)
        small = load(small_job)
        again = backend.run_chunk(small, small.chunks[0], context_for(small_job), cancel=threading.Event())
        assert again.status is WorkerStatus.OK, again.stderr
        assert backend._pool.started == 2
    finally:
        backend.close()


def test_task_and_result_lines_carry_a_prefix_and_round_trip() -> None:
    from helios_kit.protocol import WorkerRequest, WorkerResult

    task = WorkerTask(request=WorkerRequest(job_url="/j/job.json", chunk_id=3, store="/s"), cwd="/j")
    line = task_line(task)
    assert line.startswith("HELIOS-WORKER-TASK {") and line.endswith("\n") and line.count("\n") == 1
    assert WorkerTask.model_validate_json(line.split(" ", 1)[1]) == task
    result = WorkerResult.failed(3, "boom", retryable=True)
    assert parse_result(RESULT_MARK + result.model_dump_json(by_alias=True)) == result
    assert parse_result('HELIOS-WORKER-FRAMES {"chunkId": 3, "frames": 2}') is None


@pytest.mark.render
def test_videos_on_one_warm_worker_see_nothing_of_each_other(tmp_path: Path, tag: str) -> None:
    """Two jobs from one http origin (storage is kept per origin) on one warm worker and one Chromium: the
    second video's page finds none of the state the first one set (globals, storage, cookies, caches...)."""
    with leak_site(tmp_path / "site") as served:
        jobs = [one_chunk_job(tmp_path / name, served, name) for name in ("first", "second")]
        backend = LocalBackend(LocalOptions(warm=True))
        try:
            for job in jobs:
                spec = load(job)
                result = backend.run_chunk(spec, spec.chunks[0], context_for(job), cancel=threading.Event())
                assert result.status is WorkerStatus.OK, result.stderr
                assert leaks_seen(job.parent / spec.chunks[0].output_file) == []
            assert backend._pool is not None and backend._pool.started == 1
        finally:
            backend.close()


def one_chunk_job(folder: Path, url: str, job_id: str) -> Path:
    folder.mkdir()
    spec = plan_job(RenderConfig(input=url, width=W, height=H, fps=30, frame_count=2), concurrency=1, job_id=job_id)
    dump(spec, folder / "job.json")
    return folder / "job.json"
