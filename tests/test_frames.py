"""Durations to frame counts: `ceil(duration x fps)`, float-safe, one helper used by every caller."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.cli import cli
from helios_kit.frames import MAX_FRAMES, frames_for_duration
from helios_kit.spec import load

frame_rates = st.one_of(
    st.sampled_from([1, 12, 23.976, 24, 25, 29.97, 30, 50, 59.94, 60, 120, 1000]),
    st.floats(min_value=0.5, max_value=1000, allow_nan=False, allow_infinity=False),
)


@pytest.mark.parametrize(
    ("duration", "fps", "frames"),
    [(1.01, 30, 31), (1.1, 30, 33), (1, 30, 30), (0.5, 25, 13), (4, 29.97, 120), (1e-9, 30, 1), (2.2, 30, 66)],
)
def test_documented_examples(duration, fps, frames) -> None:
    assert frames_for_duration(duration, fps) == frames


@given(frames=st.integers(min_value=1, max_value=MAX_FRAMES), fps=frame_rates)
def test_a_duration_computed_from_frames_gives_those_frames_back(frames, fps) -> None:
    assert frames_for_duration(frames / fps, fps) == frames


@given(
    duration=st.floats(min_value=1e-3, max_value=86_400, allow_nan=False, allow_infinity=False),
    fps=frame_rates,
)
def test_it_is_the_ceiling_of_the_exact_product_up_to_float_noise(duration, fps) -> None:
    exact = Fraction(duration) * Fraction(fps)
    frames = frames_for_duration(duration, fps)
    assert frames >= 1
    # Never a frame short of the duration (beyond a millionth of a frame of float noise) ...
    assert frames >= exact - Fraction(1, 10**6)
    # ... and never a whole frame more than it needs.
    assert frames - 1 < exact
    assert frames in (math.floor(exact), math.ceil(exact))


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_values_are_value_errors(bad) -> None:
    with pytest.raises(ValueError, match="duration must be a finite number > 0"):
        frames_for_duration(bad, 30)
    with pytest.raises(ValueError, match="fps must be a finite number > 0"):
        frames_for_duration(1, bad)


@pytest.mark.parametrize(("duration", "frames"), [("1.01", 31), ("1.1", 33)])
def test_render_emit_job_plans_the_ceiling(tmp_path, duration, frames) -> None:
    (tmp_path / "comp.html").write_text("<p>hi</p>")
    job = tmp_path / "job.json"
    args = ["render", str(tmp_path / "comp.html"), "--emit-job", str(job), "-o", str(tmp_path / "out.mp4")]
    result = CliRunner().invoke(cli, [*args, "--duration", duration, "--fps", "30"])
    assert result.exit_code == 0, result.output
    assert load(job).config.frame_count == frames
