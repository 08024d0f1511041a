"""Job files written by the original Helios CLI load into the same JobSpec as our own emit."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from helios_kit.cli import cli
from helios_kit.errors import SpecError
from helios_kit.spec import load, spec_from_data


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
