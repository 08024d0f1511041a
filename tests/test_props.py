"""Input props on the command line: `--props JSON` / `--props-file FILE` over the meta tag's defaults, in the
page before any script, carried into job files and chunk commands, part of every chunk's identity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helios_kit.composition import chunk_digest
from helios_kit.spec import load

FIXTURE = Path(__file__).parent / "fixtures" / "props.html"


def helios(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def centre(video: Path) -> tuple[int, int, int]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    frame = np.frombuffer(raw, np.uint8).reshape(48, 64, 3)
    return tuple(int(v) for v in frame[24, 32])


def close(rgb: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 24 for a, b in zip(rgb, expected, strict=True))


@pytest.mark.render
def test_props_from_the_meta_tag_the_flag_and_a_file(tmp_path: Path) -> None:
    page = tmp_path / "props.html"
    shutil.copy(FIXTURE, page)
    default = helios("render", str(page), "-o", "meta.mp4", "-q", "--no-audio", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert close(centre(tmp_path / "meta.mp4"), (0, 0, 255))
    flagged = helios("render", str(page), "-o", "flag.mp4", "-q", "--props", '{"color": "#ff0000"}', cwd=tmp_path)
    assert flagged.returncode == 0, flagged.stderr
    assert close(centre(tmp_path / "flag.mp4"), (255, 0, 0))
    (tmp_path / "props.json").write_text(json.dumps({"color": "#00ff00"}))
    filed = helios("render", str(page), "-o", "file.mp4", "-q", "--props-file", "props.json", cwd=tmp_path)
    assert filed.returncode == 0, filed.stderr
    assert close(centre(tmp_path / "file.mp4"), (0, 255, 0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--props", "[1, 2]"], "--props: must be a JSON object, got an array"),
        (["--props", "{oops"], "--props: invalid JSON at line 1, column 2"),
        (["--props-file", "missing.json"], "--props-file: cannot read missing.json"),
        (["--props", "{}", "--props-file", "p.json"], "--props and --props-file: give one of them"),
    ],
)
def test_bad_props_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "p.json").write_text("{}")
    result = helios("render", str(FIXTURE), "--emit-job", "job.json", *args, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_props_reach_the_job_file_its_commands_and_the_chunk_identity(tmp_path: Path) -> None:
    args = ["render", str(FIXTURE), "--emit-job", "job.json", "--concurrency", "1"]
    assert helios(*args, "--props", '{"color": "#ff0000"}', cwd=tmp_path).returncode == 0
    red = load(tmp_path / "job.json")
    assert red.config.props == {"color": "#ff0000", "label": "meta"}  # the meta tag's defaults, overridden
    command = red.chunks[0].command
    assert command[command.index("--props") + 1] == '{"color":"#ff0000","label":"meta"}'
    assert helios(*args, "--props", '{"color": "#00ff00"}', cwd=tmp_path).returncode == 0
    green = load(tmp_path / "job.json")
    assert chunk_digest(red, red.chunks[0]) != chunk_digest(green, green.chunks[0])
