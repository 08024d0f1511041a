"""Seam checks (helios_kit/seams.py): `helios job run --verify-seams` and `verify.seams` in the JobSpec
render one frame more per chunk boundary and compare it with the next chunk's first frame."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fakes.jobs import FRAME_INDEX_HTML, make_job
from fakes.renders import decode_frame_indexes

from helios_kit import seams
from helios_kit.errors import SpecError
from helios_kit.render import render_range
from helios_kit.render.session import SeamImages
from helios_kit.spec import RenderConfig, dumps, load, loads

FIXTURES = Path(__file__).resolve().parent / "fixtures"
W, H = 160, 120


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = dict(os.environ, HELIOS_HOME=str(tmp_path / "home"))
    environment["HELIOS_TEST_PROCESS_TAG"] = f"helios-seams-{uuid.uuid4().hex}"
    environment.pop("HELIOS_WORKER_RENDER", None)
    return environment


def helios(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def _image(path: Path, color: str) -> Path:
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c={color}:s=32x24", "-frames:v", "1"]
    subprocess.run([*argv, str(path)], check=True)
    return path


# -- the JobSpec field --------------------------------------------------------------------------------
def test_verify_is_optional_and_left_out_of_dumps_when_off(tmp_path: Path) -> None:
    job = make_job(tmp_path, frames=8, chunks=2)
    text = job.read_text()
    spec = load(job)
    assert spec.verify.seams is False and '"verify"' not in text and dumps(spec) == text
    data = json.loads(text)
    data["verify"] = {"seams": True, "minPsnr": 40}
    spec = loads(json.dumps(data))
    assert spec.verify.seams is True and spec.verify.min_psnr == 40
    assert json.loads(dumps(spec))["verify"] == {"seams": True, "minPsnr": 40.0}


def test_verify_errors_name_the_field(tmp_path: Path) -> None:
    data = json.loads(make_job(tmp_path, frames=8, chunks=2).read_text())
    data["verify"] = {"seams": True, "sides": 2}
    with pytest.raises(SpecError, match=r"verify\.sides"):
        loads(json.dumps(data))


def test_which_chunks_keep_which_images(tmp_path: Path) -> None:
    spec = load(make_job(tmp_path, frames=9, chunks=3))
    assert [seams.wanted(spec, chunk) for chunk in spec.chunks] == [(False, True), (True, True), (True, False)]


# -- PSNR ---------------------------------------------------------------------------------------------
def test_psnr_is_infinite_for_identical_images_and_finite_otherwise(tmp_path: Path) -> None:
    red = _image(tmp_path / "red.png", "red")
    again = _image(tmp_path / "red2.png", "red")
    blue = _image(tmp_path / "blue.png", "blue")
    assert math.isinf(seams.psnr(red, again))
    value = seams.psnr(red, blue)
    assert 0 < value < 20


# -- the extra frame is the next chunk's first frame, played through ----------------------------------
@pytest.mark.render
def test_the_tail_is_the_next_frame_and_stays_out_of_the_video(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(FRAME_INDEX_HTML)
    config = RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=8)
    common = dict(input_location=str(tmp_path / "index.html"), quiet=True)
    first = render_range(
        config,
        start_frame=0,
        frame_count=4,
        output_path=tmp_path / "a.mp4",
        seam=SeamImages(tail=tmp_path / "a.mp4.seam-tail"),
        **common,
    )
    second = render_range(
        config,
        start_frame=4,
        frame_count=4,
        output_path=tmp_path / "b.mp4",
        seam=SeamImages(head=tmp_path / "b.mp4.seam-head"),
        **common,
    )
    assert decode_frame_indexes(tmp_path / "a.mp4", W, H) == [0, 1, 2, 3]
    assert decode_frame_indexes(tmp_path / "b.mp4", W, H) == [4, 5, 6, 7]
    tail, head = Path(first.seam_files["tail"]), Path(second.seam_files["head"])
    assert set(first.seam_files) == {"tail"} and set(second.seam_files) == {"head"}
    assert tail.name == "a.mp4.seam-tail.jpg" and head.name == "b.mp4.seam-head.jpg"
    assert math.isinf(seams.psnr(tail, head))  # frame 4 played through == frame 4 fast-forwarded


# -- whole runs -----------------------------------------------------------------------------------------
@pytest.mark.render
def test_a_deterministic_composition_passes_and_keeps_its_seam_images(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    plain = helios("job", "run", str(job), "-q", env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert not list((tmp_path / "job").rglob("*.seam-*"))  # off by default

    checked = helios("job", "run", str(job), "-q", "--verify-seams", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # chunks complete without seam images render again, each keeping what its boundaries need
    assert "3 rendered" in checked.stdout.strip().splitlines()[-1]
    kept = sorted(path.name for path in (tmp_path / "job").rglob("*.seam-*"))
    assert kept == [
        "chunk-0000.mp4.seam-tail.jpg",
        "chunk-0001.mp4.seam-head.jpg",
        "chunk-0001.mp4.seam-tail.jpg",
        "chunk-0002.mp4.seam-head.jpg",
    ]
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", W, H) == list(range(12))


@pytest.mark.render
def test_a_composition_that_is_not_deterministic_fails_naming_the_seam(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2, html=(FIXTURES / "canvas_trails.html").read_text())
    data = json.loads(job.read_text())
    data["verify"] = {"seams": True}  # in the JobSpec this time, not on the command line
    job.write_text(json.dumps(data))

    result = helios("job", "run", str(job), "-q", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert "seam 0|1 at frame 4: PSNR " in line, line
    assert "not deterministic there" in line
    assert not (tmp_path / "job" / "out.mp4").exists()


@pytest.mark.render
def test_without_the_check_the_same_composition_merges(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2, html=(FIXTURES / "canvas_trails.html").read_text())
    result = helios("job", "run", str(job), "-q", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "job" / "out.mp4").exists()
