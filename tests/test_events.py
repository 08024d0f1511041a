"""--events FILE: one JSON line per progress event (an EventRecord), frames done so far on every line, a
`finished` line with the run's state; a path that cannot be written is one line before anything renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.jobs import make_job

from helios_kit.errors import SpecError
from helios_kit.events import EventRecord, EventsWriter
from helios_kit.protocol import EventKind, ProgressEvent


def records(path: Path) -> list[EventRecord]:
    return [EventRecord.model_validate_json(line) for line in path.read_text().splitlines()]


def test_writer_counts_frames_across_retries_and_finishes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "events.jsonl"
    writer = EventsWriter(path, "job-1", {0: 10, 1: 10})
    for event in (
        ProgressEvent(kind=EventKind.STARTED, chunk_id=0, attempt=1),
        ProgressEvent(kind=EventKind.FRAMES, chunk_id=0, attempt=1, frames=4),
        ProgressEvent(kind=EventKind.SKIPPED, chunk_id=1, frames=10),
        ProgressEvent(kind=EventKind.RETRYING, chunk_id=0, attempt=1, error="blip"),
        ProgressEvent(kind=EventKind.FRAMES, chunk_id=0, attempt=2, frames=7),
        ProgressEvent(kind=EventKind.RENDERED, chunk_id=0, attempt=2, frames=10),
    ):
        writer(event)
    writer.finish("completed", "2 chunks: ...", "/x/out.mp4")
    lines = records(path)
    assert [r.kind for r in lines] == ["started", "frames", "skipped", "retrying", "frames", "rendered", "finished"]
    assert [r.frames_done for r in lines] == [0, 4, 14, 10, 17, 20, 20]
    assert {r.total_frames for r in lines} == {20} and {r.job_id for r in lines} == {"job-1"}
    assert lines[-1].state == "completed" and lines[-1].output == "/x/out.mp4"
    assert "framesDone" in path.read_text().splitlines()[1]  # camelCase on disk


def test_unwritable_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match=r"^--events .*file/events.jsonl: cannot write"):
        EventsWriter(tmp_path / "file" / "events.jsonl", "j", {})


def test_job_run_writes_events(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    events = tmp_path / "events.jsonl"
    tests = str(Path(__file__).parent)
    env = dict(
        os.environ,
        HELIOS_HOME=str(tmp_path / "home"),
        HELIOS_WORKER_RENDER="fakes.renders:frame_index_render",
        PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
    )
    run = [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "-q", "--events", str(events)]
    result = subprocess.run(run, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    lines = records(events)
    kinds = [r.kind for r in lines]
    assert kinds[0] == "resolved" and kinds[-1] == "finished"
    assert kinds.count("started") == 3 and kinds.count("rendered") == 3 and "merged" in kinds
    assert lines[-1].state == "completed" and lines[-1].frames_done == 12 and "3 rendered" in lines[-1].summary
    for line in events.read_text().splitlines():
        json.loads(line)  # every line whole

    again = subprocess.run(run, capture_output=True, text=True, env=env, check=False)
    assert again.returncode == 0
    kinds = [r.kind for r in records(events)]  # replaced, not appended
    assert kinds.count("skipped") == 3 and "rendered" not in kinds and kinds[-1] == "finished"

    bad = subprocess.run(
        [*run[:-1], str(tmp_path / "job" / "job.json" / "x.jsonl"), "--force"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --events ")
