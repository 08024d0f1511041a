"""JobSpec invariants: round trips, and every invariant-breaking mutation rejected naming its field."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.composition import chunk_digest
from helios_kit.errors import SpecError
from helios_kit.planner import plan_job
from helios_kit.spec import (
    RenderConfig,
    dumps,
    load,
    loads,
    spec_from_data,
)

configs = st.builds(
    lambda **kw: RenderConfig(**kw),
    input=st.sampled_from(["index.html", "comp/main.html", "https://example.test/c/"]),
    width=st.integers(min_value=1, max_value=2000).map(lambda v: v * 2),
    height=st.integers(min_value=1, max_value=2000).map(lambda v: v * 2),
    fps=st.sampled_from([12, 24, 30, 59.94, 60]),
    start_frame=st.integers(min_value=0, max_value=10_000),
    frame_count=st.integers(min_value=1, max_value=3_000),
    crf=st.integers(min_value=0, max_value=51),
)
specs = st.builds(lambda config, n: plan_job(config, concurrency=n), configs, st.integers(min_value=1, max_value=16))


@given(spec=specs)
def test_dump_then_load_is_identity(spec) -> None:
    text = dumps(spec)
    assert loads(text) == spec
    assert dumps(loads(text)) == text
    data = json.loads(text)
    assert "jobId" in data and "startFrame" in data["config"] and "outputFile" in data["merge"]


def _mutations(data: dict) -> list[tuple[str, callable]]:
    last = len(data["chunks"]) - 1

    def setter(path, value):
        def apply(d):
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    def swap_merge_inputs(d):
        d["merge"]["inputs"] = [*reversed(d["merge"]["inputs"]), "extra.mp4"]

    def duplicate_id(d):
        d["chunks"].append({**d["chunks"][-1], "startFrame": d["chunks"][-1]["startFrame"]})

    return [
        (f"chunks[{last}].frameCount", setter(["chunks", last, "frameCount"], 0)),
        ("chunks[0].outputFile", setter(["chunks", 0, "outputFile"], "/abs/chunk.mp4")),
        ("chunks[0].outputFile", setter(["chunks", 0, "outputFile"], "../escape.mp4")),
        ("chunks[0].startFrame", setter(["chunks", 0, "startFrame"], data["config"]["startFrame"] + 1)),
        ("merge.inputs", swap_merge_inputs),
        ("merge.outputFile", setter(["merge", "outputFile"], "a/../../x.mp4")),
        ("config.fps", setter(["config", "fps"], 0)),
        ("config.frameCount", setter(["config", "frameCount"], -1)),
        ("config.bogus", setter(["config", "bogus"], 1)),
        ("jobId", setter(["jobId"], "bad id with spaces")),
        ("version", setter(["version"], 2)),
        ("config.capture", setter(["config", "capture"], "photo")),
        ("chunks[", duplicate_id),
    ]


@given(spec=specs, choice=st.integers(min_value=0, max_value=12))
def test_any_broken_invariant_is_rejected_naming_the_field(spec, choice) -> None:
    data = json.loads(dumps(spec))
    expected_field, mutate = _mutations(data)[choice]
    broken = copy.deepcopy(data)
    mutate(broken)
    with pytest.raises(SpecError) as caught:
        spec_from_data(broken)
    message = str(caught.value)
    assert message.startswith(expected_field), message
    assert "\n" not in message


def test_messages_read_well() -> None:
    spec = plan_job(RenderConfig(input="i.html", frame_count=60), concurrency=4)
    data = json.loads(dumps(spec))
    data["chunks"][3]["frameCount"] = 0
    with pytest.raises(SpecError, match=r"^chunks\[3\]\.frameCount: must be > 0$"):
        spec_from_data(data)
    data = json.loads(dumps(spec))
    data["config"]["width"] = 641
    with pytest.raises(SpecError, match=r"^config\.width: must be even for pixel format yuv420p, got 641$"):
        spec_from_data(data)


def test_partitions_key_and_string_commands_are_accepted() -> None:
    spec = plan_job(RenderConfig(input="i.html", frame_count=10), concurrency=2)
    data = json.loads(dumps(spec))
    data["partitions"] = data.pop("chunks")
    data["config"]["input"] = "i.html"
    loaded = spec_from_data(data)
    assert [c.frame_count for c in loaded.chunks] == [5, 5]
    assert json.loads(dumps(loaded))["chunks"]  # always written back as "chunks"


def test_invalid_json_names_line_and_column(tmp_path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{\n  "version": 1,\n  "jobId": oops\n}')
    with pytest.raises(SpecError, match=r"invalid JSON at line 3, column 12"):
        load(path)


def test_chunk_digest_tracks_settings_range_and_entry_but_not_outputs_or_files(tmp_path) -> None:
    (tmp_path / "index.html").write_text("<p>v1</p>")
    spec = plan_job(RenderConfig(input="index.html", frame_count=20), concurrency=2)
    first = chunk_digest(spec, spec.chunks[0])
    assert first == chunk_digest(spec, spec.chunks[0])
    assert first != chunk_digest(spec, spec.chunks[1])
    # Files are dependencies checked one by one (helios_kit.composition.deps), never part of the digest.
    (tmp_path / "index.html").write_text("<p>v2</p>")
    assert chunk_digest(spec, spec.chunks[0]) == first
    # Settings and the entry point are.
    other = spec.model_copy(update={"config": spec.config.model_copy(update={"crf": 30})})
    assert chunk_digest(other, other.chunks[0]) != first
    moved = spec.model_copy(update={"config": spec.config.model_copy(update={"input": "other.html"})})
    assert chunk_digest(moved, moved.chunks[0]) != first
    renamed = spec.model_copy(update={"config": spec.config.model_copy(update={"output": "final.mp4"})})
    assert chunk_digest(renamed, renamed.chunks[0]) == first
