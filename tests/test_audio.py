"""Tests for render/audio.py: the HTML audio convention, and the mix made once over the merged timeline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit.errors import HeliosError, RenderError
from helios_kit.probe import probe
from helios_kit.render.audio import AudioPlan, AudioTrack, discover_audio, mix_filter, static_tracks
from helios_kit.stitch import stitch

RATE = 48000
TONE_HZ = 330.5  # not a whole number of cycles per second, so a restart at a border shows
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def write_page(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "index.html"
    page.write_text(f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")
    return page


def test_discovers_audio_elements_and_opted_in_videos(tmp_path: Path) -> None:
    page = write_page(
        tmp_path / "comp",
        """
        <audio src="music.ogg" data-helios-start="1.5" data-helios-volume="0.5" loop></audio>
        <audio data-helios-trim-start="0.25" data-helios-trim-end="2"><source src="sfx/hit.m4a"></audio>
        <audio src="off.ogg" data-helios-audio="off"></audio>
        <audio src="muted.ogg" muted></audio>
        <video src="silent-by-default.webm"></video>
        <video src="clip.webm" muted autoplay data-helios-audio data-helios-start="2"></video>
        <video src="other.webm" muted data-helios-audio="off"></video>
        <audio src="https://example.invalid/a.mp3"></audio>
        """,
    )
    plan = discover_audio(str(tmp_path / "comp"))  # a folder means its index.html
    comp = page.parent.resolve()
    assert plan.tracks == [
        AudioTrack(src=str(comp / "music.ogg"), start_s=1.5, volume=0.5, loop=True),
        AudioTrack(src=str(comp / "sfx/hit.m4a"), trim_start_s=0.25, trim_end_s=2.0),
        AudioTrack(src=str(comp / "clip.webm"), start_s=2.0),
        AudioTrack(src="https://example.invalid/a.mp3"),
    ]
    assert discover_audio(str(page)) == plan
    assert discover_audio(page.resolve().as_uri()) == plan


def test_no_media_gives_an_empty_plan(tmp_path: Path) -> None:
    page = write_page(tmp_path, "<div>no sound</div><img src='x.png'>")
    assert discover_audio(str(page)).tracks == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<audio src="a.ogg" data-helios-start="soon"></audio>', "data-helios-start='soon' is not a number"),
        ('<audio src="a.ogg" data-helios-volume="-1"></audio>', "data-helios-volume='-1' must be a finite"),
        ('<audio src="a.ogg" data-helios-volume="11"></audio>', "data-helios-volume=11.0 must be at most 10"),
        ('<audio src="a.ogg" data-helios-trim-start="2" data-helios-trim-end="1"></audio>', "must be after"),
        ('<audio src="data:audio/ogg;base64,AAAA"></audio>', "unsupported scheme 'data'"),
    ],
)
def test_bad_attributes_name_the_element(tmp_path: Path, body: str, message: str) -> None:
    page = write_page(tmp_path, body)
    with pytest.raises(RenderError) as excinfo:
        discover_audio(str(page))
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_media_element_without_src_is_a_warning_not_an_error(tmp_path: Path, caplog) -> None:
    page = write_page(tmp_path, "<audio data-helios-start='1'></audio><audio src='a.ogg'></audio>")
    with caplog.at_level("WARNING", logger="helios.audio"):
        plan = discover_audio(str(page))
    assert [Path(track.src).name for track in plan.tracks] == ["a.ogg"]
    assert "<audio> has no src" in caplog.text


def test_missing_composition(tmp_path: Path) -> None:
    with pytest.raises(HeliosError, match="no such composition"):
        discover_audio(str(tmp_path / "nothing.html"))


@settings(max_examples=100, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=1e5, allow_nan=False),
    volume=st.floats(min_value=0.001, max_value=10, allow_nan=False),
)
def test_attribute_values_round_trip(tmp_path_factory, start: float, volume: float) -> None:
    page = write_page(
        tmp_path_factory.mktemp("p"),
        f'<p>x</p><audio src="a b.ogg" data-helios-start="{start!r}" data-helios-volume="{volume!r}"/>',
    )
    (track,) = discover_audio(str(page)).tracks
    assert (track.start_s, track.volume) == (start, volume)
    assert track.src.endswith("a b.ogg")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<audio",
                "<video",
                "<source",
                " src=",
                '"a.ogg"',
                " data-helios-start=",
                " data-helios-volume=",
                " data-helios-audio",
                " loop",
                " muted",
                "'x'",
                '"1.5"',
                '"-2"',
                ">",
                "</audio>",
                "</video>",
                "<p>",
                "&amp;",
                "<!--",
                "-->",
                "<script>",
                "</script>",
                " ",
                "=",
                '"',
            ]
        ),
        max_size=40,
    )
)
def test_any_html_gives_a_plan_or_a_one_line_error(tmp_path_factory, parts: list[str]) -> None:
    # The static reader (a page with <script> goes to the browser, tested in tests/render/test_helios_core.py).
    page = write_page(tmp_path_factory.mktemp("fuzz"), "".join(parts))
    try:
        tracks = static_tracks(page.read_text(), str(page.resolve()))
    except HeliosError as error:
        assert "\n" not in str(error)
    else:
        for track in tracks:
            assert page.parent.resolve() in Path(track.src).parents  # resolved against the page's folder
            assert track.start_s >= 0 and 0 < track.volume <= 10


# --- the mix, with real ffmpeg ----------------------------------------------------------------------


def make_chunk(path: Path, frames: int, rate: int = 30) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=160x120:rate={rate}",
            "-frames:v",
            str(frames),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return path


def make_tone(path: Path, seconds: float, freq: float = 440) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={freq}:sample_rate={RATE}:duration={seconds}",
            str(path),
        ],
        check=True,
    )
    return path


def decode_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(RATE),
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32)


def rms(samples: np.ndarray, start_s: float, end_s: float) -> float:
    window = samples[int(start_s * RATE) : int(end_s * RATE)]
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "a": make_chunk(root / "chunk-0000.mp4", 30),
        "b": make_chunk(root / "chunk-0001.mp4", 30),
        "tone": make_tone(root / "tone.wav", 3.0, freq=TONE_HZ),
        "short": make_tone(root / "short.ogg", 0.4, freq=880),
    }


def border_faults(samples: np.ndarray, border_s: float) -> list[str]:
    """What is wrong with the tone around ``border_s``: level dips, jumps, or a break in the sine's phase."""
    faults = []
    steady = rms(samples, 0.1, border_s - 0.1)
    for start in np.arange(border_s - 0.1, border_s + 0.1, 0.01):
        if abs(rms(samples, start, start + 0.01) - steady) > 0.08 * steady:
            faults.append(f"level at {start:.2f} s")
    window = samples[int((border_s - 0.02) * RATE) : int((border_s + 0.02) * RATE)]
    max_step = 0.125 * 2 * np.pi * TONE_HZ / RATE  # the most a sine of amplitude 1/8 moves per sample
    if np.max(np.abs(np.diff(window))) > max_step * 1.3:
        faults.append("sample jump")
    t = np.arange(len(window)) / RATE
    basis = np.column_stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t)])
    coef = np.linalg.lstsq(basis, window, rcond=None)[0]
    if np.sqrt(np.mean((window - basis @ coef) ** 2)) > 0.01:
        faults.append("phase break")
    return faults


@needs_ffmpeg
def test_tone_spans_the_chunk_border_without_a_discontinuity(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    plan = AudioPlan(tracks=[AudioTrack(src=str(media["tone"]))])
    result = stitch([media["a"], media["b"]], out, audio=plan, expected_frames=60)
    assert result.audio_tracks == 1
    info = probe(out)
    assert info.frame_count == 60
    assert info.audio_codec == "aac" and info.audio_sample_rate == RATE
    assert info.audio_duration_s == pytest.approx(2.0, abs=0.03)  # cut to the video, not the 3 s tone
    samples = decode_audio(out)
    assert rms(samples, 0.1, 1.9) == pytest.approx(0.125 / np.sqrt(2), rel=0.05)  # ffmpeg's sine: 1/8
    assert border_faults(samples, 1.0) == []


@needs_ffmpeg
def test_per_chunk_audio_would_be_caught(media: dict[str, Path], tmp_path: Path) -> None:
    """Negative control for the border check: audio encoded into each chunk and concatenated is faulty."""
    with_audio = []
    for name in ("a", "b"):
        target = tmp_path / f"{name}.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(media[name]),
                "-i",
                str(media["tone"]),
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-t",
                "1",
                str(target),
            ],
            check=True,
        )
        with_audio.append(target)
    out = tmp_path / "per-chunk.mp4"
    stitch(with_audio, out)  # no plan: streams are copied as they are
    faults = border_faults(decode_audio(out), 1.0)
    print("per-chunk faults:", faults)
    assert faults != []


@needs_ffmpeg
def test_start_offset_volume_loop_and_timeline_shift(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    plan = AudioPlan(
        tracks=[
            AudioTrack(src=str(media["short"]), start_s=0.5, volume=2.0, loop=True),
            AudioTrack(src=str(media["tone"]), start_s=1.25, volume=0.5, trim_start_s=1.0, trim_end_s=1.5),
        ]
    )
    stitch([media["a"], media["b"]], out, audio=plan)
    samples = decode_audio(out)
    full = 0.125 / np.sqrt(2)
    assert rms(samples, 0.0, 0.45) < 0.002  # silent before the first track starts
    assert rms(samples, 0.55, 0.85) == pytest.approx(2 * full, rel=0.05)
    assert rms(samples, 1.85, 1.95) == pytest.approx(2 * full, rel=0.05)  # looped past its 0.4 s length
    # The trimmed tone adds on top between 1.25 s and 1.75 s (different frequency: powers add).
    both = np.sqrt((2 * full) ** 2 + (0.5 * full) ** 2)
    assert rms(samples, 1.3, 1.7) == pytest.approx(both, rel=0.05)

    shifted = tmp_path / "shifted.mp4"
    stitch([media["a"]], shifted, audio=plan.model_copy(update={"timeline_start_s": 0.5}))
    samples = decode_audio(shifted)
    assert rms(samples, 0.05, 0.35) == pytest.approx(2 * full, rel=0.05)  # the timeline's 0.5 s is t=0


def dominant_hz(samples: np.ndarray, start_s: float, end_s: float) -> float:
    window = samples[int(start_s * RATE) : int(end_s * RATE)].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.fft.rfftfreq(len(window), 1 / RATE)[int(np.argmax(spectrum))])


@needs_ffmpeg
def test_helios_attributes_offset_seek_rate_and_fades(media: dict[str, Path], tmp_path: Path) -> None:
    """data-helios-offset/-seek, playbackRate and the fades as the mix plays them (see render/audio.py)."""
    out = tmp_path / "out.mp4"
    plan = AudioPlan(
        tracks=[
            AudioTrack(src=str(media["tone"]), start_s=0.5, seek_s=1.0, playback_rate=2.0, fade_in_s=0.5),
            AudioTrack(src=str(media["short"]), start_s=1.2, fade_out_s=0.2, source_duration_s=0.4),
        ]
    )
    stitch([media["a"], media["b"]], out, audio=plan)
    samples = decode_audio(out)
    full = 0.125 / np.sqrt(2)
    assert rms(samples, 0.0, 0.45) < 0.002  # offset: nothing before 0.5 s
    assert rms(samples, 0.52, 0.58) < 0.35 * full  # fading in ...
    assert rms(samples, 0.9, 0.98) > 0.8 * full  # ... louder near its end
    assert rms(samples, 1.02, 1.18) == pytest.approx(full, rel=0.05)  # full level after the fade
    # Rate 2 plays twice as fast at the same pitch (atempo), as a media element with preservesPitch does.
    assert dominant_hz(samples, 1.0, 1.2) == pytest.approx(TONE_HZ, abs=8)
    # seek 1 s into the 3 s tone at rate 2: it ends 1 s after its start, at 1.5 s.
    assert rms(samples, 1.6, 1.95) < 0.002
    # The 0.4 s sound starting at 1.2 s fades out over its last 0.2 s (it ends before the video does).
    both = np.sqrt(2) * full
    assert rms(samples, 1.25, 1.35) == pytest.approx(both, rel=0.1)  # both tracks at full level
    assert rms(samples, 1.52, 1.58) < 0.5 * full  # the short one near its end, the tone already gone


@needs_ffmpeg
def test_html_convention_end_to_end(media: dict[str, Path], tmp_path: Path) -> None:
    comp = tmp_path / "comp"
    write_page(comp, '<audio src="sound/tone.wav" data-helios-start="1" data-helios-volume="0.5"></audio>')
    (comp / "sound").mkdir()
    shutil.copyfile(media["tone"], comp / "sound" / "tone.wav")
    out = tmp_path / "out.mp4"
    result = stitch([media["a"], media["b"]], out, audio=discover_audio(str(comp)))
    assert result.audio_tracks == 1
    samples = decode_audio(out)
    assert rms(samples, 0.1, 0.9) < 0.002
    assert rms(samples, 1.1, 1.9) == pytest.approx(0.5 * 0.125 / np.sqrt(2), rel=0.05)


@needs_ffmpeg
def test_missing_or_silent_track_is_refused(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError, match=r"audio track .*nope\.ogg: no such file"):
        stitch([media["a"]], out, audio=AudioPlan(tracks=[AudioTrack(src=str(tmp_path / "nope.ogg"))]))
    with pytest.raises(RenderError, match="has no audio stream"):
        stitch([media["a"]], out, audio=AudioPlan(tracks=[AudioTrack(src=str(media["b"]))]))
    assert not out.exists()


@needs_ffmpeg
def test_merge_command_audio_from(media: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from helios_kit.commands.merge import merge_command

    comp = tmp_path / "comp"
    write_page(comp, '<audio src="tone.wav"></audio>')
    shutil.copyfile(media["tone"], comp / "tone.wav")
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(merge_command, [str(out), str(media["a"]), str(media["b"]), "--audio-from", str(comp)])
    assert result.exit_code == 0, result.output
    assert "1 audio track(s) mixed" in result.output
    assert probe(out).audio_duration_s == pytest.approx(2.0, abs=0.03)


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(min_value=0.01, max_value=100, allow_nan=False))
def test_playback_rate_becomes_atempo_steps_ffmpeg_accepts(rate: float) -> None:
    from helios_kit.render.audio import _tempo

    factors = [float(step.removeprefix("atempo=")) for step in _tempo(rate)]
    assert all(0.5 <= factor <= 2 for factor in factors)
    assert float(np.prod(factors)) == pytest.approx(rate, rel=1e-5)


@pytest.mark.parametrize(
    ("easing", "curve"),
    [(None, "tri"), ("linear", "tri"), ("quad.in", "qua"), ("cubic.out", "cub"), ("sine.inOut", "qsin"), ("x", "tri")],
)
def test_fade_easing_maps_to_an_afade_curve(easing: str | None, curve: str) -> None:
    track = AudioTrack(src="a.ogg", start_s=1, fade_in_s=0.5, fade_out_s=0.25, fade_easing=easing)
    _inputs, graph = mix_filter(AudioPlan(tracks=[track]), duration_s=3)
    assert f"afade=t=in:st=0:d=0.5:curve={curve}" in graph
    assert f"afade=t=out:st=1.75:d=0.25:curve={curve}" in graph  # ends with the video (3 s) in track time 2 s


@needs_ffmpeg
def test_loud_tracks_are_limited_not_clipped(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "loud.mp4"
    # two in-phase tones at 6 x 1/8 each: 1.5 at the peaks, which would clip without the limiter
    tone = AudioTrack(src=str(media["tone"]), volume=6.0)
    stitch([media["a"], media["b"]], out, audio=AudioPlan(tracks=[tone, tone]))
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(out), "-map", "0:a:0", "-f", "f32le", "-ac", "2", "-"],
        check=True,
        capture_output=True,
    ).stdout
    stereo = np.frombuffer(raw, np.float32).reshape(-1, 2)[int(0.2 * RATE) : int(1.8 * RATE)]
    assert float(np.max(np.abs(stereo))) <= 0.98  # the -1 dBFS ceiling, plus the AAC encode's overshoot
    assert float(np.sqrt(np.mean(stereo.astype(np.float64) ** 2))) > 0.55  # limited near the ceiling, not turned down
