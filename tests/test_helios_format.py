"""Job files written by the original Helios CLI load into the same JobSpec as our own emit."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import PurePosixPath

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.cli import cli
from helios_kit.errors import SpecError
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dumps, load, loads, spec_from_data


def helios_job(frames=300, parts=2, extra_flags="") -> dict:
    per = frames // parts
    chunks = []
    for i in range(parts):
        start = i * per
        count = per if i < parts - 1 else frames - start
        command = (
            f"helios render comp.html -o part_{i}.mov --start-frame {start} --frame-count {count} "
            f"--width 1920 --height 1080 --fps 30 --mode canvas --quality 23 {extra_flags}"
        ).strip()
        chunks.append(
            {"id": i, "startFrame": start, "frameCount": count, "outputFile": f"part_{i}.mov", "command": command}
        )
    return {
        "metadata": {"totalFrames": frames, "fps": 30, "width": 1920, "height": 1080, "duration": frames / 30},
        "chunks": chunks,
        "mergeCommand": "helios merge output.mp4 " + " ".join(shlex.quote(c["outputFile"]) for c in chunks),
    }


def test_helios_job_loads_like_our_own_emit(tmp_path) -> None:
    (tmp_path / "comp.html").write_text("<canvas></canvas>")
    theirs = spec_from_data(helios_job())
    result = CliRunner().invoke(
        cli,
        [
            "render",
            str(tmp_path / "comp.html"),
            "--emit-job",
            str(tmp_path / "job.json"),
            "--concurrency",
            "2",
            "--duration",
            "10",
            "--fps",
            "30",
            "--width",
            "1920",
            "--height",
            "1080",
            "--mode",
            "canvas",
            "--quality",
            "23",
            "-o",
            str(tmp_path / "output.mp4"),
        ],
    )
    assert result.exit_code == 0, result.output
    ours = load(tmp_path / "job.json")
    assert theirs.config == ours.config.model_copy(update={"output": "output.mp4"})
    assert [(c.id, c.start_frame, c.frame_count) for c in theirs.chunks] == [
        (c.id, c.start_frame, c.frame_count) for c in ours.chunks
    ]
    assert theirs.merge.output_file == ours.merge.output_file == "output.mp4"
    assert theirs.merge.inputs == ["part_0.mov", "part_1.mov"]
    assert isinstance(theirs.chunks[0].command, str)  # stored as given, never run through a shell


def test_partitions_and_merge_object_shape() -> None:
    data = helios_job()
    data["partitions"] = data.pop("chunks")
    data["merge"] = {"command": data.pop("mergeCommand")}
    spec = spec_from_data(data)
    assert len(spec.chunks) == 2 and spec.config.crf == 23 and spec.config.capture == "canvas"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["chunks"][1].update(command="ffmpeg -i x.mov"),
            r"chunks\[1\]\.command: expected a 'helios render'",
        ),
        (
            lambda d: d["chunks"][0].update(command=d["chunks"][0]["command"] + " --bitrate 5M"),
            r"chunks\[0\]\.command: unknown flag '--bitrate'",
        ),
        (
            lambda d: d["chunks"][0].update(command=d["chunks"][0]["command"] + " --fps"),
            r"chunks\[0\]\.command: flag '--fps' has no value",
        ),
        (lambda d: d["chunks"][0].update(command='helios render "unterminated'), r"cannot tokenize"),
        (lambda d: d.update(mergeCommand="helios concat a b"), r"mergeCommand: expected a 'helios merge'"),
        (
            lambda d: d["chunks"][1].update(command=d["chunks"][1]["command"].replace("--width 1920", "--width 640")),
            r"chunks\[1\]\.command: width 640 differs",
        ),
        (
            lambda d: d["chunks"][0].update(command=d["chunks"][0]["command"] + " ; rm -rf /"),
            r"unexpected extra argument ';'",
        ),
    ],
)
def test_bad_helios_commands_are_clear_errors(mutate, message) -> None:
    data = helios_job()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        spec_from_data(json.loads(json.dumps(data)))


# --- the exact shapes the original CLI writes ----------------------------------------------------------
# Produced by `helios render comp.html --emit-job job.json ...` of @helios-project/cli 0.45.2: chunks are
# `.mov` files named after a temp prefix, each command forces `--audio-codec pcm_s16le` (an intermediate),
# and the merge command carries the final output's `--audio-codec` / `--quality`.


def original_job(
    frames: int = 30,
    concurrency: int = 3,
    fps: int = 30,
    width: int = 1920,
    height: int = 1080,
    quality: int | None = 23,
    audio_codec: str | None = "aac",
    extra: str = "",
    output: str = "renders/final.mp4",
) -> dict:
    """A job in the shape RenderOrchestrator.plan + the CLI's --emit-job produce (same arithmetic)."""
    size = math.ceil(frames / concurrency)
    prefix = str(PurePosixPath(output).parent / "temp_1796197802844_j3poxl").removeprefix("./")
    flags = f"--width {width} --height {height} --fps {fps}"
    flags += f" --quality {quality}" if quality is not None else ""
    flags += f" --mode canvas --audio-codec pcm_s16le{extra}"
    chunks = []
    for i in range(concurrency):
        count = min(size, frames - i * size)
        if count <= 0:
            break
        out = f"{prefix}_part_{i}.mov"
        command = f"helios render comp.html -o {out} --start-frame {i * size} --frame-count {count} {flags}"
        chunks.append({"id": i, "startFrame": i * size, "frameCount": count, "outputFile": out, "command": command})
    merge = f"helios merge {output} " + " ".join(chunk["outputFile"] for chunk in chunks)
    merge += f" --audio-codec {audio_codec}" if audio_codec else ""
    merge += f" --quality {quality}" if quality is not None else ""
    metadata = {"totalFrames": frames, "fps": fps, "width": width, "height": height, "duration": frames / fps}
    return {"metadata": metadata, "chunks": chunks, "mergeCommand": merge}


def test_the_original_emit_job_shape_loads() -> None:
    spec = spec_from_data(original_job(extra=" --video-codec libx264 --no-headless"))
    config = spec.config
    assert (config.width, config.height, config.fps, config.frame_count) == (1920, 1080, 30, 30)
    assert config.capture == "canvas" and config.crf == 23 and config.video_codec == "libx264"
    assert config.audio_codec == "aac"  # the merge's; pcm_s16le was the chunks' intermediate
    assert [c.output_file for c in spec.chunks] == [f"renders/temp_1796197802844_j3poxl_part_{i}.mov" for i in range(3)]
    assert spec.merge.output_file == config.output == "renders/final.mp4"
    assert spec.merge.inputs == [c.output_file for c in spec.chunks]


def test_the_original_runner_keys_are_tolerated() -> None:
    data = {**original_job(), "id": "job-1733", "assetsUrl": "https://example.test/assets.tar.gz"}
    assert spec_from_data(data).job_id == "job-1733"


def test_defaults_when_the_original_leaves_things_out() -> None:
    spec = spec_from_data(original_job(quality=None, audio_codec=None, output="out.mp4"))
    assert spec.config.crf == 18 and spec.config.audio_codec == "aac" and spec.config.video_codec == "libx264"


@given(
    frames=st.integers(min_value=1, max_value=5000),
    concurrency=st.integers(min_value=1, max_value=64),
    fps=st.sampled_from([12, 24, 25, 30, 60]),
    width=st.integers(min_value=1, max_value=1000).map(lambda v: 2 * v),
    height=st.integers(min_value=1, max_value=1000).map(lambda v: 2 * v),
    quality=st.one_of(st.none(), st.integers(min_value=0, max_value=51)),
)
def test_any_original_plan_converts_to_a_spec_covering_its_frames(frames, concurrency, fps, width, height, quality):
    data = original_job(frames, concurrency, fps, width, height, quality)
    spec = spec_from_data(json.loads(json.dumps(data)))
    assert spec.config.frame_count == frames and spec.config.start_frame == 0
    assert (spec.config.width, spec.config.height, spec.config.fps) == (width, height, fps)
    assert [(c.start_frame, c.frame_count) for c in spec.chunks] == [
        (c["startFrame"], c["frameCount"]) for c in data["chunks"]
    ]
    assert spec.config.crf == (18 if quality is None else quality)
    assert loads(dumps(spec)) == spec


def config_partitions_job() -> dict:
    """The `config` + `partitions` shape: the CLI's options (as commander keeps them: strings) plus `input`."""
    commands = [
        "helios render comp.html -o chunk_0.mov --start-frame 0 --frame-count 4 --width 320 --height 240 --fps 24"
        " --mode canvas --quality 20",
        "helios render comp.html -o chunk_1.mov --start-frame 4 --frame-count 3 --width 320 --height 240 --fps 24"
        " --mode canvas --quality 20",
    ]
    return {
        "config": {
            "input": "comp.html",
            "output": "out.mp4",
            "width": "320",
            "height": "240",
            "fps": "24",
            "duration": "1",
            "frameCount": "7",
            "quality": "20",
            "mode": "canvas",
            "concurrency": "2",
            "emitJob": "job.json",
            "headless": True,
            "props": {"title": "Ada", "n": 2},
        },
        "partitions": [{"command": command} for command in commands],
        "merge": {"command": "helios merge out.mp4 chunk_0.mov chunk_1.mov"},
    }


def test_the_config_and_partitions_shape_loads() -> None:
    spec = spec_from_data(config_partitions_job())
    config = spec.config
    assert (config.input, config.width, config.height, config.fps, config.frame_count) == ("comp.html", 320, 240, 24, 7)
    assert config.capture == "canvas" and config.crf == 20 and config.props == {"n": 2, "title": "Ada"}
    assert [(c.id, c.start_frame, c.frame_count, c.output_file) for c in spec.chunks] == [
        (0, 0, 4, "chunk_0.mov"),
        (1, 4, 3, "chunk_1.mov"),
    ]
    assert spec.merge.output_file == "out.mp4" and spec.merge.inputs == ["chunk_0.mov", "chunk_1.mov"]


def test_a_partition_with_a_duration_renders_its_ceiling() -> None:
    data = config_partitions_job()
    data["partitions"] = [{"command": "helios render comp.html -o c.mov --duration 1.1 --fps 30"}]
    data["merge"] = {"command": "helios merge out.mp4 c.mov"}
    del data["config"]["frameCount"], data["config"]["fps"]
    spec = spec_from_data(data)
    assert spec.config.frame_count == spec.chunks[0].frame_count == 33


def test_config_numbers_must_be_numbers() -> None:
    data = config_partitions_job()
    data["config"]["width"] = "wide"
    with pytest.raises(SpecError, match=r"^config\.width: expected a number, got 'wide'$"):
        spec_from_data(data)


@pytest.mark.parametrize(
    ("merge", "message"),
    [
        ("helios merge out.mp4 a.mov --bitrate 5M", r"merge\.command: unknown flag '--bitrate' in helios merge"),
        ("helios merge out.mp4", r"merge\.command: helios merge command needs an output and at least one input"),
        ("ffmpeg -i a.mov out.mp4", r"merge\.command: expected a 'helios merge' command"),
    ],
)
def test_bad_merge_commands_name_the_field(merge, message) -> None:
    data = config_partitions_job()
    data["merge"] = {"command": merge}
    with pytest.raises(SpecError, match=message):
        spec_from_data(data)


def test_commands_are_tokenized_never_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = original_job(frames=4, concurrency=1, output="out.mp4")
    data["chunks"][0]["command"] = data["chunks"][0]["command"].replace("comp.html", "'$(touch pwned)'")
    spec = spec_from_data(data)
    assert spec.config.input == "$(touch pwned)" and not (tmp_path / "pwned").exists()


def test_our_own_shape_is_never_converted() -> None:
    spec = spec_from_data(helios_job())
    data = json.loads(dumps(spec))
    data["chunks"][0]["command"] = "helios render anything --bogus-flag"  # ours: kept as given, not parsed
    assert spec_from_data(data).chunks[0].command == "helios render anything --bogus-flag"


def test_a_typo_in_a_config_of_ours_stays_an_error_naming_it() -> None:
    data = json.loads(dumps(plan_job(RenderConfig(input="comp.html", frame_count=6), concurrency=2)))
    del data["version"]
    data["config"]["framecount"] = 3
    with pytest.raises(SpecError, match=r"^config\.framecount: unknown key"):
        spec_from_data(data)
