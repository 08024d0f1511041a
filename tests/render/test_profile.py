"""HELIOS_PROFILE=1: a render reports where its time went (per-phase totals), and nothing when it is off."""

from __future__ import annotations

import pathlib

import pytest

from helios_kit.render.profile import PhaseTotal, Profiler, RenderProfile

from .conftest import FIXTURES, config, render


def test_profiler_adds_up_phases_in_first_seen_order() -> None:
    profiler = Profiler()
    profiler.add("page step", 0.010)
    profiler.add("capture", 0.020)
    profiler.add("page step", 0.030)
    report = profiler.report(frames=2)
    phases = [(p.name, round(p.ms), p.count) for p in report.phases]
    assert phases[:2] == [("page step", 40, 2), ("capture", 20, 1)]
    assert [p.name for p in report.phases[2:]] == ["cpu: this process"]


def test_lines_give_per_frame_for_per_frame_phases_and_per_call_for_the_rest() -> None:
    profile = RenderProfile(
        frames=4,
        wall_ms=1000.0,
        phases=[PhaseTotal(name="page step", ms=40.0, count=4), PhaseTotal(name="launch", ms=300.0, count=1)],
    )
    lines = profile.lines()
    assert "4.0 frames/s" in lines[0]
    assert "10.00 ms/frame" in lines[1] and "300.00 ms/call" in lines[2] and "30.0%" in lines[2]


@pytest.mark.parametrize("fixture, phases", [
    ("frame_index", {"page step", "base64 decode", "browser launch + page load", "cpu: ffmpeg"}),
    ("canvas_index", {"page step + snapshot", "base64 decode", "ffmpeg tail (after last frame)"}),
])  # fmt: skip
def test_profiled_render_reports_its_phases(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fixture: str,
    phases: set[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("HELIOS_PROFILE", "1")
    stats = render(FIXTURES / fixture / "index.html", tmp_path / "out.mp4", 0, 3, config(160, 120))
    assert stats.profile is not None and stats.profile.frames == 3
    names = {phase.name for phase in stats.profile.phases}
    assert phases <= names, names
    captures = [p for p in stats.profile.phases if p.name.startswith(("capture", "page step"))]
    assert captures and all(p.count >= 3 for p in captures)
    assert "profile: 3 frames" in capsys.readouterr().err


def test_unprofiled_render_has_no_profile(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_PROFILE", raising=False)
    stats = render(FIXTURES / "frame_index" / "index.html", tmp_path / "out.mp4", 0, 2, config(160, 120))
    assert stats.profile is None
