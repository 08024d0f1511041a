"""The merge looks for a soundtrack only when the render saw media: the chunk that reached the job's end
stepped every frame from 0, and its manifest says how many media elements the page showed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.jobs import RuntimeBackend, make_job
from fakes.renders import decode_frame_indexes, frame_index_render

from helios_kit.render import audio
from helios_kit.run import RunOptions, execute_job
from helios_kit.spec import load
from helios_kit.store import ArtifactStore


def render_seeing(media: int):
    def render(config: Any, **kwargs: Any) -> Any:
        stats = frame_index_render(config, **kwargs)
        stats.media_seen = media
        return stats

    return render


def run(tmp_path: Path, media: int):
    job = make_job(tmp_path / f"job-{media}", frames=9, chunks=3)
    backend = RuntimeBackend(render_seeing(media), tmp_path / "ws")
    return job, execute_job(load(job), str(job), job.parent, backend, RunOptions(concurrency=1))


def test_no_media_seen_means_no_soundtrack_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("discover_audio ran although the render saw no media")

    monkeypatch.setattr(audio, "discover_audio", never)
    job, report = run(tmp_path, media=0)
    assert report.ok, report.summary_line()
    manifest = ArtifactStore(job.parent).read_manifest(load(job).chunks[-1].output_file)
    assert manifest is not None and manifest.media_seen == 0
    assert decode_frame_indexes(job.parent / "out.mp4", 160, 120) == list(range(9))


def test_media_seen_means_the_soundtrack_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def discover(location: str, **kwargs: Any) -> audio.AudioPlan:
        asked.append(location)
        return audio.AudioPlan(tracks=[])

    monkeypatch.setattr(audio, "discover_audio", discover)
    _, report = run(tmp_path, media=2)
    assert report.ok and len(asked) == 1
