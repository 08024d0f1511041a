"""Per-frame progress: the local worker's HELIOS-WORKER-FRAMES lines (parsed while supervising, with real
Chromium), the remote heartbeat in the store polled by RemoteBackend, FRAMES events from the executor only to
backends that report frames, and the one-bar tally (frames/s over rendered frames, ETA)."""

from __future__ import annotations

import io
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes.jobs import make_job
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.backends.base import Backend, ChunkContext, WorkerResult
from helios_kit.backends.local import FramesTail, LocalBackend, LocalOptions
from helios_kit.backends.remote import RemoteBackend
from helios_kit.commands.progress import FrameTally, RichProgress
from helios_kit.executor import AttemptOptions, ChunkExecutor
from helios_kit.heartbeat import StoreHeartbeat, heartbeat_name, read_heartbeat
from helios_kit.protocol import EventKind, FrameProgress, ProgressEvent, WorkerRequest
from helios_kit.run import RunOptions, execute_job
from helios_kit.spec import JobSpec, load
from helios_kit.store import ArtifactStore
from helios_kit.worker.lines import FRAMES_MARK, frames_printer, parse_frames_line
from helios_kit.worker.runtime import WorkerRuntime


# -- the local worker's lines -----------------------------------------------------------------------------
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**9))
def test_frames_lines_round_trip(chunk_id: int, frames: int, total: int) -> None:
    line = FRAMES_MARK + FrameProgress(chunk_id=chunk_id, frames=frames, total=total).model_dump_json(by_alias=True)
    parsed = parse_frames_line(line)
    assert parsed is not None and (parsed.chunk_id, parsed.frames, parsed.total) == (chunk_id, frames, total)


@given(st.text())
def test_any_other_line_is_not_progress_and_nothing_raises(text: str) -> None:
    parse_frames_line(FRAMES_MARK + text)  # garbage after the mark: None or a valid FrameProgress, never raises
    if not text.startswith(FRAMES_MARK):
        assert parse_frames_line(text) is None


def test_tail_reads_only_complete_lines_as_they_come() -> None:
    seen: list[int] = []
    with tempfile.TemporaryFile() as out:
        tail = FramesTail(out, seen.append)
        out.write(b"log line\n" + FRAMES_MARK.encode() + b'{"chunkId": 2, "frames": 3}\n' + FRAMES_MARK.encode())
        out.flush()
        tail.poll()
        assert seen == [3]
        out.write(b'{"chunkId": 2, "frames": 9}\nHELIOS-WORKER-RESULT {}\n')
        out.flush()
        tail.poll()
        assert seen == [3, 9]


def test_printer_throttles_but_always_prints_the_last_frame(capsys: pytest.CaptureFixture[str]) -> None:
    report = frames_printer(7, interval=3600)
    for done in range(1, 11):
        report(done, 10)
    lines = [parse_frames_line(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [(p.chunk_id, p.frames) for p in lines if p] == [(7, 1), (7, 10)]


@pytest.mark.render
@pytest.mark.parametrize("warm", [True, False], ids=["warm-workers", "one-process-per-chunk"])
def test_local_worker_reports_frames_before_its_chunk_ends(tmp_path: Path, warm: bool) -> None:
    """Real Chromium and ffmpeg: a 160x120 chunk's frames reach the executor's sinks as FRAMES events, in
    order, before the chunk's RENDERED event, the last one being the chunk's frame count; from a warm worker
    (lines read as they come) and from a one-chunk worker (its output file tailed)."""
    job = make_job(tmp_path / "job", frames=16, chunks=2)
    spec = load(job)
    events: list[ProgressEvent] = []
    lock = threading.Lock()

    def sink(event: ProgressEvent) -> None:
        with lock:
            events.append(event)

    with LocalBackend(LocalOptions(warm=warm)) as backend:
        report = execute_job(spec, str(job), job.parent, backend, RunOptions(concurrency=1), sinks=[sink])
    assert report.ok, report.summary_line()
    for chunk in spec.chunks:
        mine = [e for e in events if e.chunk_id == chunk.id]
        frames = [e.frames for e in mine if e.kind is EventKind.FRAMES]
        assert frames and frames[-1] == chunk.frame_count and frames == sorted(frames)
        kinds = [e.kind for e in mine]
        assert kinds.index(EventKind.RENDERED) > max(i for i, k in enumerate(kinds) if k is EventKind.FRAMES)
        assert {e.attempt for e in mine if e.kind is EventKind.FRAMES} == {1}


# -- the executor -----------------------------------------------------------------------------------------
class Reporting(Backend):
    name = "reporting"
    backups_by_default = False  # in this process: the attempts are counted, not raced
    reports_frames = True

    def run_chunk(self, spec, chunk, context, *, cancel, timeout=None, on_frames=None) -> WorkerResult:
        for done in range(1, chunk.frame_count + 1):
            on_frames(done)
        return WorkerResult(chunk_id=chunk.id, status="ok", frames=chunk.frame_count)


class Silent(Backend):
    """Says it reports frames but its run_chunk takes no on_frames: it must not receive one."""

    name = "silent"
    backups_by_default = False  # in this process: the attempts are counted, not raced
    reports_frames = True

    def run_chunk(self, spec, chunk, context, *, cancel, timeout=None) -> WorkerResult:
        return WorkerResult(chunk_id=chunk.id, status="ok", frames=chunk.frame_count)


@pytest.mark.parametrize("backend_cls, expected", [(Reporting, [1, 2, 3, 4]), (Silent, [])])
def test_executor_forwards_frames_only_to_backends_that_take_them(
    tmp_path: Path, backend_cls: type[Backend], expected: list[int]
) -> None:
    spec = load(make_job(tmp_path / "job", frames=8, chunks=2))
    events: list[ProgressEvent] = []
    context = ChunkContext(
        job_url=str(tmp_path / "job" / "job.json"), job_dir=str(tmp_path / "job"), store_url=str(tmp_path)
    )
    executor = ChunkExecutor(backend_cls(), spec, context, AttemptOptions(concurrency=1), sinks=[events.append])
    outcome = executor.run_chunk(spec.chunks[1])
    assert outcome.state.done
    frames = [e for e in events if e.kind is EventKind.FRAMES]
    assert [e.frames for e in frames] == expected and all(e.chunk_id == 1 and e.attempt == 1 for e in frames)


# -- the remote heartbeat ---------------------------------------------------------------------------------
class InThreadRemote(RemoteBackend):
    """A RemoteBackend whose 'remote' worker is WorkerRuntime in this process (no pipe: the store heartbeat)."""

    name = "in-thread"
    backups_by_default = False  # in this process: the attempts are counted, not raced
    heartbeat_poll_s = 0.01

    def __init__(self, render: Any, workspace: Path) -> None:
        super().__init__()
        self.runtime = WorkerRuntime(workspace, render=render)

    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> Any:
        result = self.runtime.run(request.job_url, request.chunk_id, request.store, request.force, cancel=cancel)
        return result.model_dump_json(by_alias=True)


def test_remote_worker_frames_travel_through_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker writes its heartbeat; the client polls it while the call runs. The render waits, after each
    frame it reports, until the client has seen that count (event-driven, no sleeps)."""
    monkeypatch.setattr("helios_kit.heartbeat.WRITE_INTERVAL_S", 0.0)
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    spec = load(job)
    seen: list[int] = []
    arrived = threading.Condition()

    def on_frames(frames: int) -> None:
        with arrived:
            seen.append(frames)
            arrived.notify_all()

    def render(config: Any, *, frame_count: int, output_path: Path, progress: Any, **_: Any) -> Any:
        for done in range(1, frame_count + 1):
            progress(done, frame_count)
            with arrived:
                assert arrived.wait_for(lambda n=done: n in seen, timeout=60), f"frame {done} never reached the client"
        Path(output_path).write_bytes(b"video")
        return None

    backend = InThreadRemote(render, tmp_path / "ws")
    chunk = spec.chunks[1]
    context = ChunkContext(job_url=str(job), job_dir=str(job.parent), store_url=str(job.parent))
    result = backend.run_chunk(spec, chunk, context, cancel=threading.Event(), on_frames=on_frames)
    assert result.ok, result.stderr
    assert seen == list(range(1, chunk.frame_count + 1))
    assert read_heartbeat(ArtifactStore(job.parent), chunk.output_file) is None  # removed after the commit


def test_heartbeat_writes_at_most_every_interval(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    beat = StoreHeartbeat(store, "chunks/c.mp4", 3, interval=3600)
    beat(1, 10)
    beat(5, 10)
    assert (tmp_path / heartbeat_name("chunks/c.mp4")).exists()
    got = read_heartbeat(store, "chunks/c.mp4")
    assert got is not None and (got.chunk_id, got.frames, got.total) == (3, 1, 10)
    (tmp_path / heartbeat_name("chunks/c.mp4")).write_text("{not json")
    assert read_heartbeat(store, "chunks/c.mp4") is None


# -- the bar ----------------------------------------------------------------------------------------------
def _spec(tmp_path: Path) -> JobSpec:
    return load(make_job(tmp_path / "job", frames=40, chunks=4))


def test_tally_counts_frames_mid_chunk_rate_and_eta(tmp_path: Path) -> None:
    tally = FrameTally(_spec(tmp_path))
    tally.add(ProgressEvent(kind=EventKind.SKIPPED, chunk_id=0, frames=10), now=0.0)
    assert tally.rate(now=5.0) == 0.0 and tally.eta_s(now=5.0) is None  # nothing rendered yet
    tally.add(ProgressEvent(kind=EventKind.STARTED, chunk_id=1, attempt=1), now=10.0)
    tally.add(ProgressEvent(kind=EventKind.FRAMES, chunk_id=1, frames=4), now=11.0)
    tally.add(ProgressEvent(kind=EventKind.FRAMES, chunk_id=1, frames=99), now=11.0)  # capped at the chunk
    assert tally.frames_done == 20 and tally.rendered_frames == 10
    assert tally.rate(now=12.0) == 5.0 and tally.eta_s(now=12.0) == 4.0
    tally.add(ProgressEvent(kind=EventKind.RETRYING, chunk_id=1, attempt=1), now=12.0)
    assert tally.frames_done == 10
    tally.add(ProgressEvent(kind=EventKind.RENDERED, chunk_id=1, frames=10), now=13.0)
    tally.add(ProgressEvent(kind=EventKind.FRAMES, chunk_id=1, frames=2), now=13.0)  # late: the chunk is done
    assert tally.frames_done == 20 and tally.finished == {0, 1}


def test_one_bar_moves_with_frames(tmp_path: Path) -> None:
    from rich.console import Console

    progress = RichProgress(_spec(tmp_path), console=Console(file=io.StringIO(), width=120, force_terminal=False))
    with progress:
        progress(ProgressEvent(kind=EventKind.STARTED, chunk_id=2, attempt=1))
        progress(ProgressEvent(kind=EventKind.FRAMES, chunk_id=2, frames=6))
    (bar,) = progress.progress.tasks
    assert (bar.completed, bar.total) == (6, 40) and "0/4 chunks" in bar.description
    assert bar.fields["rate"].endswith("frames/s") and bar.fields["eta"].startswith("ETA ")
