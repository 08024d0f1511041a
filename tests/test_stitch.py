"""Tests for stitch.py, probe.py and `helios merge`: order, compatibility refusals, atomicity, speed path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit import stitch as stitch_module
from helios_kit.errors import HeliosError, RenderError
from helios_kit.probe import count_packets, mp4_video_signature, probe
from helios_kit.stitch import stitch

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

W, H = 160, 120


def make_chunk(
    path: Path,
    start: int,
    frames: int,
    *,
    size: tuple[int, int] = (W, H),
    rate: int = 30,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    extra: tuple[str, ...] = (),
) -> Path:
    """Encode frames [start, start+frames) painting each frame's index as 8 binary bars (bit k = bar k)."""
    w, h = size
    geq = f"geq=lum='if(bitand(N+{start}\\,pow(2\\,floor(X*8/W)))\\,235\\,16)':cb=128:cr=128"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=black:s={w}x{h}:r={rate},format=yuv444p,{geq}",
            "-frames:v",
            str(frames),
            "-c:v",
            codec,
            "-pix_fmt",
            pix_fmt,
            *extra,
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return path


def frame_indices(path: Path, size: tuple[int, int] = (W, H)) -> list[int]:
    """Decode ``path`` and read back the index painted in each frame."""
    w, h = size
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True,
        capture_output=True,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w)
    bar = w // 8
    return [sum(1 << k for k in range(8) if frame[h // 2, k * bar + bar // 2] > 128) for frame in frames]


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("chunks")
    bounds = [(0, 23), (23, 20), (43, 17)]
    return [make_chunk(root / f"chunk-{i:04d}.mp4", s, n) for i, (s, n) in enumerate(bounds)]


def leftovers(directory: Path, output_name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{output_name}."))


def test_merge_keeps_every_frame_in_order(chunks: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = stitch(chunks, out, expected_frames=60)
    assert result.frames == 60
    assert result.duration_s == pytest.approx(2.0)
    assert result.inputs == chunks
    assert frame_indices(out) == list(range(60))
    info = probe(out)
    assert (info.codec, info.width, info.height, info.pixel_format) == ("h264", W, H, "yuv420p")
    assert info.frame_count == 60
    assert info.fps == 30
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert leftovers(tmp_path, "out.mp4") == []


def test_the_merged_output_gets_a_new_files_mode(chunks: list[Path], tmp_path: Path) -> None:
    """Not the 0600 of a private temporary file: a merged video is read by whoever reads the folder."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")  # the mode any new file gets here (the umask applied)
    out = tmp_path / "out.mp4"
    stitch(chunks, out, expected_frames=60)
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_tiny_chunks_keep_exact_timestamps(tmp_path: Path) -> None:
    """One-frame chunks (no B-frames) between longer ones (with B-frames): every frame lands on n / fps."""
    bounds = [(0, 1), (1, 5), (6, 1), (7, 2), (9, 1)]
    files = [make_chunk(tmp_path / f"c{i}.mp4", s, n) for i, (s, n) in enumerate(bounds)]
    out = tmp_path / "out.mp4"
    assert stitch(files, out).frames == 10
    assert frame_indices(out) == list(range(10))
    pts = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(round(float(p) * 30, 3) for p in pts) == [float(n) for n in range(10)]
    assert probe(out).duration_s == pytest.approx(10 / 30, abs=1e-4)


def test_merge_single_chunk_and_relative_paths(chunks: list[Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(chunks[0].parent)
    out = tmp_path / "one.mp4"
    result = stitch([Path(chunks[1].name)], out)
    assert result.frames == 20
    assert frame_indices(out) == list(range(23, 43))


def test_probe_reports_fields(chunks: list[Path]) -> None:
    info = probe(chunks[0])
    assert info.frame_count == 23
    assert info.frame_rate == "30"
    assert info.time_base.startswith("1/")
    assert info.audio_codec is None
    assert count_packets(chunks[0]) == 23
    sig = mp4_video_signature(chunks[0])
    assert sig is not None and sig.sample_count == 23
    assert sig.compatible_with(mp4_video_signature(chunks[1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (320, 240)}, "width 320 differs from 160"),
        ({"size": (160, 90)}, "height 90 differs from 120"),
        ({"rate": 25}, "fps 25 differs from 30"),
        ({"pix_fmt": "yuv444p"}, "pixel format yuv444p differs from yuv420p"),
        ({"codec": "mpeg4"}, "codec mpeg4 differs from h264"),
        ({"extra": ("-video_track_timescale", "90000")}, "time base 1/90000 differs from"),
        ({"extra": ("-profile:v", "main")}, "profile Main differs from High"),
        ({"extra": ("-refs", "1")}, "codec parameters (SPS/PPS"),
    ],
)
def test_refuses_incompatible_chunk(chunks: list[Path], tmp_path: Path, kwargs: dict, message: str) -> None:
    odd = make_chunk(tmp_path / "chunk-0003.mp4", 60, 10, **kwargs)
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError) as excinfo:
        stitch([*chunks, odd], out)
    text = str(excinfo.value)
    assert message in text
    assert text.startswith(str(odd)) and str(chunks[0]) in text
    assert "\n" not in text
    assert not out.exists() and leftovers(tmp_path, "out.mp4") == []


def test_refuses_missing_and_empty_inputs(chunks: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    missing = tmp_path / "chunk-0009.mp4"
    with pytest.raises(RenderError, match=r"chunk-0009\.mp4: input chunk does not exist"):
        stitch([*chunks, missing], out)
    empty = tmp_path / "chunk-0010.mp4"
    empty.touch()
    with pytest.raises(RenderError, match=r"chunk-0010\.mp4: input chunk is empty"):
        stitch([chunks[0], empty], out)
    junk = tmp_path / "chunk-0011.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(RenderError, match=r"chunk-0011\.mp4: ffprobe cannot read it"):
        stitch([chunks[0], junk], out)
    with pytest.raises(RenderError, match="at least one input"):
        stitch([], out)
    assert not out.exists()


def test_expected_frames_mismatch_keeps_old_output(chunks: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous")
    with pytest.raises(RenderError, match="inputs hold 60 frames, expected 61"):
        stitch(chunks, out, expected_frames=61)
    assert out.read_bytes() == b"previous"


def test_verification_failure_leaves_nothing(chunks: list[Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stitch_module, "count_packets", lambda path: 59)
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError, match="merged file has 59 frames, expected 60"):
        stitch(chunks, out)
    assert not out.exists() and leftovers(tmp_path, "out.mp4") == []


def test_refuses_missing_output_dir(chunks: list[Path], tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="does not exist"):
        stitch(chunks, tmp_path / "nope" / "out.mp4")


def test_output_may_be_an_input(chunks: list[Path], tmp_path: Path) -> None:
    """In place (e.g. adding a soundtrack to a whole render): the input is replaced only when complete."""
    target = tmp_path / "whole.mp4"
    shutil.copyfile(chunks[0], target)
    result = stitch([target, chunks[1]], target)
    assert result.frames == 43
    assert frame_indices(target) == list(range(43))
    assert leftovers(tmp_path, "whole.mp4") == []


def test_many_chunks_use_the_fast_header_path(tmp_path: Path, monkeypatch) -> None:
    one = make_chunk(tmp_path / "seed.mp4", 0, 3)
    files = []
    for i in range(300):
        target = tmp_path / f"chunk-{i:04d}.mp4"
        shutil.copyfile(one, target)
        files.append(target)
    calls: list[Path] = []
    real_probe = stitch_module.probe
    monkeypatch.setattr(stitch_module, "probe", lambda p: calls.append(p) or real_probe(p))
    result = stitch(files, tmp_path / "out.mp4", expected_frames=900)
    assert result.frames == 900
    assert calls == [files[0]]  # only the first chunk is probed with ffprobe


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_mp4_header_reader_never_crashes_on_garbage(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("garbage") / "x.mp4"
    path.write_bytes(data)
    assert mp4_video_signature(path) is None or isinstance(mp4_video_signature(path).sample_count, int)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4000), flip=st.integers(min_value=0, max_value=4000))
def test_mp4_header_reader_survives_truncation_and_corruption(chunks: list[Path], tmp_path_factory, cut, flip):
    data = bytearray(chunks[0].read_bytes())
    if flip < len(data):
        data[flip] ^= 0xFF
    path = tmp_path_factory.mktemp("cut") / "x.mp4"
    path.write_bytes(bytes(data[: max(len(data) - cut, 0)]))
    sig = mp4_video_signature(path)  # must not raise; None or a signature
    assert sig is None or sig.sample_count >= 0


def test_merge_command(chunks: list[Path], tmp_path: Path) -> None:
    from helios_kit.commands.merge import merge_command

    out = tmp_path / "cli.mp4"
    result = CliRunner().invoke(merge_command, [str(out), *map(str, chunks), "--expected-frames", "60"])
    assert result.exit_code == 0, result.output
    assert "60 frames" in result.output and "3 chunk(s)" in result.output
    assert frame_indices(out) == list(range(60))

    bad = CliRunner().invoke(merge_command, [str(out), str(chunks[0]), str(tmp_path / "missing.mp4")])
    assert bad.exit_code != 0
    assert isinstance(bad.exception, HeliosError)
    assert "missing.mp4: input chunk does not exist" in str(bad.exception)
