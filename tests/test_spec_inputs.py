"""Bad input in a JobSpec ends in one line naming the field: JSON depth, frame bounds, codec names; props."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.composition import config_digest
from helios_kit.errors import SpecError
from helios_kit.frames import MAX_FRAMES
from helios_kit.planner import plan_job
from helios_kit.spec import (
    CODEC_NAME_PATTERN,
    MAX_JSON_DEPTH,
    RenderConfig,
    check_codec_name,
    dumps,
    loads,
    parse_json,
    parse_json_object,
    spec_from_data,
)


def job_data(**config) -> dict:
    spec = plan_job(RenderConfig(input="index.html", frame_count=10), concurrency=2, job_id="job-1")
    data = json.loads(dumps(spec))
    data["config"].update(config)
    return data


# --- JSON depth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_deeply_nested_json_is_one_line_naming_the_source(text) -> None:
    with pytest.raises(SpecError) as caught:
        loads(text, source="deep.json")
    assert str(caught.value) == f"deep.json: JSON nested more than {MAX_JSON_DEPTH} levels deep"


def test_nesting_just_within_the_limit_parses() -> None:
    props = {}
    inner = props
    for _ in range(MAX_JSON_DEPTH - 3):
        inner["x"] = {}
        inner = inner["x"]
    spec = spec_from_data(job_data(props=props))
    assert loads(dumps(spec)) == spec
    too_deep = job_data(props={"x": props})
    with pytest.raises(SpecError, match=r"^config\.props: nested more than 62 levels deep"):
        spec_from_data(too_deep)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "request body: must be a JSON object, got an array"),
        (b"null", "request body: must be a JSON object, got null"),
        (b"{", "request body: invalid JSON at line 1, column 2"),
        (b"\xff\xfe\x00", "request body: "),
        (b"[" * 70_000, "request body: JSON nested more than 64 levels deep"),
    ],
)
def test_request_bodies_parse_to_one_line(body, message) -> None:
    with pytest.raises(SpecError) as caught:
        parse_json_object(body, "request body")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# --- frame bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["frameCount", "startFrame"])
def test_frame_numbers_have_an_upper_bound_that_the_error_states(field) -> None:
    data = job_data(**{field: MAX_FRAMES + 1})
    with pytest.raises(SpecError) as caught:
        spec_from_data(data)
    assert str(caught.value).startswith(f"config.{field}: must be <= 86400000 (24 h at 1000 fps)")


def test_chunk_frame_numbers_have_the_same_bound() -> None:
    data = job_data()
    data["chunks"][1]["frameCount"] = MAX_FRAMES + 1
    with pytest.raises(SpecError, match=r"^chunks\[1\]\.frameCount: must be <= 86400000 \(24 h at 1000 fps\)"):
        spec_from_data(data)


def test_the_bound_itself_is_allowed() -> None:
    config = RenderConfig(input="i.html", frame_count=MAX_FRAMES, start_frame=MAX_FRAMES)
    assert config.end_frame == 2 * MAX_FRAMES


# --- codec and pixel-format names -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["libx264", "yuv420p", "prores_ks", "yuv420p10le", "libvpx-vp9", "h264_nvenc", "aac"])
def test_real_codec_names_pass(name) -> None:
    assert check_codec_name(name) == name


@pytest.mark.parametrize("name", ["-vf", "", "lib x264", "libx264 -vf scale=1:1", "a;b", "x\n", "../x", "a" * 65])
@pytest.mark.parametrize("field", ["videoCodec", "audioCodec", "pixelFormat"])
def test_options_and_odd_values_are_refused_naming_the_field(field, name) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_data(job_data(**{field: name}))
    assert str(caught.value).startswith(f"config.{field}: must be a name like libx264")
    assert "\n" not in str(caught.value)


@given(st.text(max_size=80))
def test_the_codec_validator_accepts_exactly_the_names_of_the_pattern(text) -> None:
    expected = bool(CODEC_NAME_PATTERN.fullmatch(text)) and len(text) <= 64
    try:
        check_codec_name(text)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == expected
    if accepted:
        assert not text.startswith("-") and not any(c.isspace() for c in text)


@given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"))
def test_every_name_of_the_pattern_round_trips(name) -> None:
    data = job_data(videoCodec=name, audioCodec=name)
    assert spec_from_data(data).config.video_codec == name


# --- props ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
props_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(props=props_objects)
def test_props_round_trip_with_stable_key_order(props) -> None:
    spec = spec_from_data(job_data(props=props))
    assert spec.config.props == props
    text = dumps(spec)
    assert loads(text) == spec and dumps(loads(text)) == text
    reordered = dict(reversed(list(props.items())))
    assert dumps(spec_from_data(job_data(props=reordered))) == text


@given(first=props_objects, second=props_objects)
def test_props_are_part_of_every_chunks_identity(first, second) -> None:
    a = spec_from_data(job_data(props=first)).config
    b = spec_from_data(job_data(props=second)).config
    assert (config_digest(a) == config_digest(b)) == (
        json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    )


def test_props_default_to_an_empty_object_and_must_be_an_object() -> None:
    assert RenderConfig(input="i.html", frame_count=1).props == {}
    with pytest.raises(SpecError, match=r"^config\.props: "):
        spec_from_data(job_data(props=[1, 2]))
    with pytest.raises(SpecError, match=r"^config\.props\.a: nan is not a JSON number"):
        spec_from_data(job_data(props={"a": float("nan")}))


@given(depth=st.integers(min_value=1, max_value=3 * MAX_JSON_DEPTH), kind=st.sampled_from(["[", '{"k":']))
def test_json_is_accepted_exactly_up_to_the_depth_limit(depth, kind) -> None:
    closing = "]" if kind == "[" else "}"
    text = kind * depth + "1" + closing * depth if kind != "[" else "[" * depth + "]" * depth
    if depth <= MAX_JSON_DEPTH:
        parse_json(text, "x")
    else:
        with pytest.raises(SpecError, match=r"^x: JSON nested more than 64 levels deep$"):
            parse_json(text, "x")


@given(value=st.integers(min_value=0, max_value=2 * MAX_FRAMES))
def test_frame_numbers_are_accepted_exactly_up_to_the_bound(value) -> None:
    if value <= MAX_FRAMES:
        assert RenderConfig(input="i.html", frame_count=max(value, 1), start_frame=value).start_frame == value
    else:
        with pytest.raises(SpecError, match=r"config\.startFrame: must be <= 86400000 \(24 h at 1000 fps\)"):
            spec_from_data(job_data(startFrame=value))
