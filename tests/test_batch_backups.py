"""Straggler backups in a batch: one Backups over every video's chunks (the batch's median, races keyed by
job and chunk, as every video has a chunk 0), on by default for a remote backend, off with the policy off.
In-process backends render the frame-index stand-in through WorkerRuntime (no Chromium)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

from fakes.jobs import RuntimeBackend
from fakes.renders import decode_frame_indexes, frame_index_render

from helios_kit import api
from helios_kit.backends.base import Backend, ChunkContext, WorkerResult
from helios_kit.batching.plan import BatchPlan
from helios_kit.batching.run import BatchEvent, BatchRun
from helios_kit.protocol import EventKind
from helios_kit.run import RunOptions
from helios_kit.spec import Chunk, JobSpec
from helios_kit.stragglers import BackupPolicy

PAGE = '<!doctype html><meta name="helios" content=\'{"width": 64, "height": 48, "fps": 10}\'><p>card</p>'
NAMES = ("a", "b", "c", "d")


def plan(tmp_path: Path) -> BatchPlan:
    """Four videos of 2 chunks each (ids 0 and 1 in every video)."""
    (tmp_path / "card.html").write_text(PAGE)
    rows = [{"id": name} for name in NAMES]
    return api.plan_rows(
        tmp_path / "card.html", rows, str(tmp_path / "out" / "{id}.mp4"), frame_count=4, chunk_frames=2
    )


class StragglingBackend(Backend):
    """A remote-like backend (not `local`, so backups default on): the first attempt at `straggler` (job id,
    chunk id) runs until its cancel event is set, or until `release` is set; every other attempt renders."""

    name = "scripted-remote"

    def __init__(self, workspace: Path, straggler: tuple[str, int], release: threading.Event | None = None) -> None:
        super().__init__()
        self.inner = RuntimeBackend(frame_index_render, workspace)
        self.straggler = straggler
        self.release = release or threading.Event()
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.lock = threading.Lock()

    def run_chunk(self, spec: JobSpec, chunk: Chunk, context: ChunkContext, *, cancel, timeout=None) -> WorkerResult:
        key = (spec.job_id, chunk.id)
        with self.lock:
            self.attempts[key] += 1
            first = self.attempts[key] == 1
        if key == self.straggler and first:
            while not self.release.is_set():
                if cancel.wait(0.05):
                    return WorkerResult.cancelled(chunk.id, "stopped: the backup won")
        return self.inner.run_chunk(spec, chunk, context, cancel=cancel, timeout=timeout)


def job_ids(batch_plan: BatchPlan) -> dict[str, str]:
    return {Path(video.output).stem: video.job_id for video in batch_plan.planned}


def test_a_straggling_chunk_of_one_video_gets_a_backup_that_wins(tmp_path: Path, caplog) -> None:
    batch_plan = plan(tmp_path)
    ids = job_ids(batch_plan)
    straggler = (ids["b"], 0)  # chunk 0 of b; a, c and d have a chunk 0 too, rendered while it straggles
    backend = StragglingBackend(tmp_path / "ws", straggler)
    # the policy's default (enabled=None) is the backend's: on (Backend.backups_by_default)
    options = RunOptions(concurrency=4, retry_delay=0.1, backups=BackupPolicy(after=0.75, factor=1.5, poll_s=0.05))
    batch = BatchRun(batch_plan, backend, options)
    try:
        with caplog.at_level(logging.INFO, logger="helios.stragglers"):
            report = batch.run()
    finally:
        batch.close()
    assert report.ok, report.summary_line()
    assert report.summary_line().startswith("4 videos: 4 rendered, 0 skipped (up to date), 0 failed")
    assert backend.attempts[straggler] == 2  # the straggler and its backup, which won
    # every other chunk once, or twice if load made it straggle by the rule too (at most one backup per chunk)
    others = {key: count for key, count in backend.attempts.items() if key != straggler}
    assert len(others) == 7 and set(others.values()) <= {1, 2}, backend.attempts
    started = [r.getMessage() for r in caplog.records if "started a backup attempt" in r.getMessage()]
    assert f"{ids['b']} chunk 0: straggling; started a backup attempt" in started, started
    for name in NAMES:
        assert decode_frame_indexes(tmp_path / "out" / f"{name}.mp4", 64, 48) == [0, 1, 2, 3]


def test_backups_off_means_one_attempt_per_chunk_however_long_one_runs(tmp_path: Path) -> None:
    """With the policy off (`helios batch --no-backups`), nothing races the straggler: it runs until let go
    (once the other three videos are merged) and every chunk is attempted once."""
    batch_plan = plan(tmp_path)
    ids = job_ids(batch_plan)
    straggler = (ids["b"], 0)
    release = threading.Event()
    merged: set[str] = set()

    def let_go_when_others_merged(tagged: BatchEvent) -> None:
        if tagged.event.kind is EventKind.MERGED:
            merged.add(Path(tagged.output).stem)
        if merged >= {"a", "c", "d"}:
            release.set()

    backend = StragglingBackend(tmp_path / "ws", straggler, release)
    policy = BackupPolicy(enabled=False, after=0.75, factor=1.5, poll_s=0.05)
    options = RunOptions(concurrency=4, retry_delay=0.1, backups=policy)
    batch = BatchRun(batch_plan, backend, options, sinks=[let_go_when_others_merged])
    assert batch.enable_backups() is None
    try:
        report = batch.run()
    finally:
        batch.close()
    assert report.ok, report.summary_line()
    assert all(run.executor.backups is None for _, run in batch.runs)
    assert len(backend.attempts) == 8 and set(backend.attempts.values()) == {1}, backend.attempts
    assert decode_frame_indexes(tmp_path / "out" / "b.mp4", 64, 48) == [0, 1, 2, 3]


def test_the_batch_summary_counts_failed_backup_attempts() -> None:
    from helios_kit.batching.run import BatchReport

    assert (
        BatchReport(duration_ms=1500).summary_line()
        == "0 videos: 0 rendered, 0 skipped (up to date), 0 failed in 1.5 s"
    )
    line = BatchReport(duration_ms=1500, backups_failed=2).summary_line()
    assert line.endswith("in 1.5 s; 2 failed backup attempts"), line


def test_the_batch_flags_set_the_backup_policy(tmp_path: Path, monkeypatch) -> None:
    """`helios batch` takes the job run's three backup flags; their values reach the batch's policy."""
    from click.testing import CliRunner

    from helios_kit.commands import batch as batch_module
    from helios_kit.commands.batch import batch_command

    (tmp_path / "card.html").write_text(PAGE)
    (tmp_path / "rows.jsonl").write_text('{"id": "a"}\n')
    policies: list[BackupPolicy] = []

    def record(template, rows, output, backend, given, settings, quiet):  # type: ignore[no-untyped-def]
        policies.append(settings["backups"])
        raise SystemExit(0)

    monkeypatch.setattr(batch_module, "_run", record)
    base = [str(tmp_path / "card.html"), str(tmp_path / "rows.jsonl"), "-o", str(tmp_path / "out/{id}.mp4")]
    runs = (
        [],
        ["--backups", "--backup-after", "0.5", "--backup-factor", "3"],
        ["--no-backups", "--backup-factor", "1.2"],
    )
    for flags in runs:
        result = CliRunner().invoke(batch_command, [*base, *flags])
        assert result.exit_code == 0, result.output
    assert policies == [
        BackupPolicy(enabled=None, after=0.75, factor=1.5),
        BackupPolicy(enabled=True, after=0.5, factor=3.0),
        BackupPolicy(enabled=False, after=0.75, factor=1.2),
    ]
    refused = CliRunner().invoke(batch_command, [*base, "--backup-factor", "1"])
    assert refused.exit_code == 2 and "--backup-factor" in refused.output


def test_a_video_s_straggler_gets_its_backup_once_that_video_waits_on_it() -> None:
    """The share that opens backups is the video's own (or the batch's, whichever comes first): with 1 of 40
    chunks done in a batch, a video whose other chunk is done (all but one) gets a backup for the one left."""
    from helios_kit.protocol import ProgressEvent, WorkerStatus
    from helios_kit.stragglers import Backups

    backups = Backups(BackupPolicy(after=0.75, factor=1.5, poll_s=0.01), total=40, name_jobs=True)
    first = backups.sink_for("video-1", 2)
    backups.sink_for("video-2", 38)
    first(ProgressEvent(kind=EventKind.RENDERED, chunk_id=1, duration_ms=1.0))  # video-1: 1 of 2 done
    attempts: list[str] = []
    lock = threading.Lock()

    def attempt(chunk: Chunk, cancel: threading.Event, timeout: float | None) -> WorkerResult:
        with lock:
            attempts.append("backup" if attempts else "primary")
            mine = attempts[-1]
        if mine == "primary":
            cancel.wait()  # straggles until the backup wins
            return WorkerResult.cancelled(chunk.id, "stopped: the backup won")
        return WorkerResult(chunk_id=chunk.id, status=WorkerStatus.OK, frames=2)

    chunk = Chunk(id=0, start_frame=0, frame_count=2, output_file="c0.mp4")
    try:
        result = backups.call("video-1", chunk, threading.Event(), None, attempt)
    finally:
        backups.close()
    assert result.ok and attempts == ["primary", "backup"] and backups.launched == 1 and backups.won == 1


def test_a_video_s_backups_open_at_its_own_share_done() -> None:
    from helios_kit.protocol import ProgressEvent
    from helios_kit.stragglers import Backups

    backups = Backups(BackupPolicy(after=0.75), total=40, name_jobs=True)
    sink = backups.sink_for("video-3", 4)
    backups.sink_for("video-4", 36)
    sink(ProgressEvent(kind=EventKind.RENDERED, chunk_id=1, duration_ms=1.0))
    sink(ProgressEvent(kind=EventKind.RENDERED, chunk_id=2, duration_ms=1.0))
    assert not backups._opened("video-3")  # 2 of 4
    sink(ProgressEvent(kind=EventKind.SKIPPED, chunk_id=3))
    assert backups._opened("video-3") and not backups._opened("video-4")  # 3 of 4; the other 0 of 36
    assert not backups._opened("unknown")
    for chunk_id in range(26):  # 26 of video-4's 36: 72%, and 29 of 40 for the batch: neither at 75%
        backups.sink_for("video-4", 36)(ProgressEvent(kind=EventKind.RENDERED, chunk_id=chunk_id, duration_ms=1))
    assert not backups._opened("video-4")
    backups.sink_for("video-4", 36)(ProgressEvent(kind=EventKind.FAILED, chunk_id=26))
    assert backups._opened("video-4") and backups._opened("unknown")  # 30 of 40: the batch's share
