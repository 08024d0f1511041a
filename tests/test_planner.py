"""Planner properties: chunks cover the range exactly once, in order, evenly; fixed-size chunks; commands."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from helios_kit.planner import new_job_id, plan_job, split_frames
from helios_kit.spec import RenderConfig, dumps, loads

starts = st.integers(min_value=0, max_value=100_000)
counts = st.integers(min_value=1, max_value=20_000)


@given(start=starts, count=counts, concurrency=st.integers(min_value=1, max_value=500))
def test_even_split_covers_range_in_order_within_one_frame(start: int, count: int, concurrency: int) -> None:
    ranges = split_frames(start, count, concurrency=concurrency)
    assert len(ranges) == min(concurrency, count)
    position = start
    for chunk_start, chunk_count in ranges:
        assert chunk_start == position
        assert chunk_count > 0
        position += chunk_count
    assert position == start + count
    sizes = [size for _, size in ranges]
    assert max(sizes) - min(sizes) <= 1


@given(start=starts, count=counts, chunk_frames=st.integers(min_value=1, max_value=5_000))
def test_fixed_size_chunks(start: int, count: int, chunk_frames: int) -> None:
    ranges = split_frames(start, count, chunk_frames=chunk_frames)
    assert sum(size for _, size in ranges) == count
    assert all(size == chunk_frames for _, size in ranges[:-1])
    assert 0 < ranges[-1][1] <= chunk_frames
    assert [s for s, _ in ranges] == list(range(start, start + count, chunk_frames))


def test_documented_examples() -> None:
    assert [size for _, size in split_frames(0, 61, concurrency=4)] == [16, 15, 15, 15]
    assert split_frames(0, 60, concurrency=2) == [(0, 30), (30, 30)]
    assert split_frames(10, 3, concurrency=8) == [(10, 1), (11, 1), (12, 1)]


@given(
    start=st.integers(min_value=0, max_value=1000),
    count=st.integers(min_value=1, max_value=600),
    concurrency=st.integers(min_value=1, max_value=40),
    fps=st.sampled_from([24, 25, 29.97, 30, 60]),
)
def test_planned_job_round_trips_and_commands_name_their_range(start, count, concurrency, fps) -> None:
    config = RenderConfig(input="comp/index.html", fps=fps, start_frame=start, frame_count=count, output="out.mp4")
    spec = plan_job(config, concurrency=concurrency)
    assert loads(dumps(spec)) == spec
    assert dumps(loads(dumps(spec))) == dumps(spec)
    for chunk in spec.chunks:
        argv = chunk.command
        assert argv[:3] == ["helios", "render", "comp/index.html"]
        assert argv[argv.index("--start-frame") + 1] == str(chunk.start_frame)
        assert argv[argv.index("--frame-count") + 1] == str(chunk.frame_count)
        assert argv[argv.index("-o") + 1] == chunk.output_file
    assert spec.merge.command[:3] == ["helios", "merge", "out.mp4"]
    assert spec.merge.command[3 : 3 + len(spec.chunks)] == [chunk.output_file for chunk in spec.chunks]


def test_job_ids_are_readable_and_unique() -> None:
    ids = {new_job_id("examples/Intro Scene.html") for _ in range(200)}
    assert len(ids) == 200
    assert all(job_id.startswith("intro-scene-") for job_id in ids)
    assert new_job_id("examples/titles/index.html").startswith("titles-")
    assert new_job_id("https://example.test/promo/").startswith("promo-")
