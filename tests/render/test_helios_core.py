"""Compositions written for the original Helios, against the real @helios-project/core package.

`./dev setup` installs the package from npm into tests/node_deps/ (git-ignored: its licence is ELv2, never
commit its files). Each test copies a fixture folder and the package's dist/ into a temporary folder, as a
Helios user's project would hold it, and renders it for real.
"""

from __future__ import annotations

import contextlib
import http.server
import math
import pathlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fakes.loopback import LoopbackHTTPServer

from helios_kit.errors import RenderError
from helios_kit.render.audio import discover_audio
from helios_kit.render.probe import PageSettings, page_settings
from tests.render.conftest import FIXTURES, config, decode, frame_indices, render

pytestmark = pytest.mark.render

CORE_DIST = pathlib.Path(__file__).resolve().parents[1] / "node_deps/node_modules/@helios-project/core/dist"
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "helios-counter"
HELIOS_FIXTURES = FIXTURES / "helios_core"
GSAP = FIXTURES / "vendor" / "gsap"
PROBE_STREAM = ["ffprobe", "-v", "error", "-count_frames", "-show_entries"]
PROBE_STREAM += ["stream=width,height,r_frame_rate,nb_read_frames"]
RAMP_VIDEO = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=64x48:r=30,geq=lum='40+N*5':cb=128:cr=128"]
RAMP_VIDEO += ["-frames:v", "40", "-c:v", "libvpx-vp9", "-lossless", "1", "-g", "1"]
NOT_INSTALLED = "@helios-project/core is not installed in tests/node_deps (run ./dev setup; it needs npm)"


@pytest.fixture
def comp(tmp_path: pathlib.Path) -> pathlib.Path:
    """The fixtures with GSAP under vendor/gsap/ (for the pages that need no Helios instance)."""
    root = tmp_path / "comp"
    shutil.copytree(HELIOS_FIXTURES, root)
    shutil.copytree(GSAP, root / "vendor" / "gsap")
    return root


@pytest.fixture
def project(comp: pathlib.Path) -> pathlib.Path:
    """The fixtures with the core package's dist/ under lib/helios-core/, as a Helios user's project holds it."""
    if not (CORE_DIST / "index.js").is_file():
        pytest.skip(NOT_INSTALLED)
    shutil.copytree(CORE_DIST, comp / "lib" / "helios-core", ignore=shutil.ignore_patterns("*.d.ts", "*.map"))
    return comp


def _rows(path: pathlib.Path) -> list[tuple[int, ...]]:
    return frame_indices(decode(path, 320, 240))


def _render_whole_and_chunk(
    page: pathlib.Path, tmp_path: pathlib.Path, count: int, chunk_start: int, **kw
) -> tuple[pathlib.Path, pathlib.Path]:
    cfg = kw.pop("cfg", None) or config(lossless=True)
    whole, chunk = tmp_path / "whole.mkv", tmp_path / "chunk.mkv"
    render(page, whole, 0, count, cfg, **kw)
    render(page, chunk, chunk_start, count - chunk_start, cfg, **kw)
    return whole, chunk


# --- the instance is driven: bound or not, whole and chunked -------------------------------------------


@pytest.mark.parametrize("page", ["bound.html", "unbound.html"])
def test_instance_sees_each_integer_frame_whole_and_chunked(
    project: pathlib.Path, tmp_path: pathlib.Path, page: str
) -> None:
    whole, chunk = _render_whole_and_chunk(project / page, tmp_path, 48, 29)
    expected = [(n, n, 0) for n in range(48)]  # row 2: notifications that would truncate to n - 1
    assert _rows(whole) == expected
    assert _rows(chunk) == expected[29:]


def test_an_instance_in_window_helios_keeps_our_api(project: pathlib.Path, tmp_path: pathlib.Path) -> None:
    whole, chunk = _render_whole_and_chunk(project / "lent.html", tmp_path, 30, 20)
    expected = [(n, n, 1) for n in range(30)]  # each frame held by delayRender until painted
    assert _rows(whole) == expected
    assert _rows(chunk) == expected[20:]


def test_an_instance_in_a_same_origin_iframe_is_stepped_with_the_page(
    project: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    whole, chunk = _render_whole_and_chunk(project / "iframe_host.html", tmp_path, 24, 17)
    expected = [(n, n, 0) for n in range(24)]
    assert _rows(whole) == expected
    assert _rows(chunk) == expected[17:]


def test_stability_checks_hold_each_frame_until_settled(project: pathlib.Path, tmp_path: pathlib.Path) -> None:
    whole, chunk = _render_whole_and_chunk(project / "stability.html", tmp_path, 36, 30)
    expected = [(n, n, 7) for n in range(36)]  # painted only after its own fetch answered
    assert _rows(whole) == expected
    assert _rows(chunk) == expected[30:]


def test_a_check_that_never_settles_fails_naming_the_frame(project: pathlib.Path, tmp_path: pathlib.Path) -> None:
    cfg = config().model_copy(update={"props": {"hangAt": 3}})
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError) as failure:
        render(project / "stability.html", out, 0, 6, cfg, timeout_s=2)
    message = str(failure.value)
    assert message.startswith("timeout: frame 3 never became ready (helios.waitUntilStable()")
    assert "\n" not in message
    assert not out.exists()


# --- animation time, GSAP ---------------------------------------------------------------------------------


def _bar_widths(path: pathlib.Path) -> list[int]:
    frames = decode(path, 320, 240, pix_fmt="gray")
    return [int((frame[120] > 128).sum()) for frame in frames]


@pytest.mark.parametrize(("page", "autosync"), [("autosync.html", True), ("noautosync.html", False)])
def test_late_mounted_css_animation_follows_composition_time_with_autosync(
    project: pathlib.Path, tmp_path: pathlib.Path, page: str, autosync: bool
) -> None:
    whole, chunk = _render_whole_and_chunk(project / page, tmp_path, 54, 40, cfg=config())
    widths = _bar_widths(whole)
    assert max(widths[:30]) == 0  # mounted at 1 s (frame 30)
    for n in range(30, 54):
        t = n / 30
        # Helios (autoSyncAnimations): animation time = composition time; otherwise time since it was created.
        local = t if autosync else t - 1
        assert abs(widths[n] - 320 * min(local / 2, 1)) <= 2, (n, widths[n])
    assert all(abs(a - b) <= 1 for a, b in zip(_bar_widths(chunk), widths[40:], strict=True))


def _box_left(path: pathlib.Path) -> list[int]:
    frames = decode(path, 320, 240, pix_fmt="gray")
    return [int(np.argmax(frame[120] > 128)) for frame in frames]


def test_paused_gsap_timeline_is_sought_every_frame(comp: pathlib.Path, tmp_path: pathlib.Path) -> None:
    whole, chunk = _render_whole_and_chunk(comp / "gsap.html", tmp_path, 40, 25, cfg=config())
    assert _box_left(whole) == [5 * n for n in range(40)]
    assert _box_left(chunk) == [5 * n for n in range(25, 40)]


# --- settings and props -----------------------------------------------------------------------------------


def test_settings_come_from_the_instance(project: pathlib.Path) -> None:
    assert page_settings(str(project / "bound.html")) == PageSettings(width=320, height=240, fps=30, duration=4)
    assert page_settings(str(project / "gsap.html")) is None


def test_cli_renders_at_the_instance_size_and_length(project: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from click.testing import CliRunner

    from helios_kit.cli import cli

    (project / "short.html").write_text(
        (project / "unbound.html")
        .read_text()
        .replace("start({ bind: false })", "start({ bind: false }).setDuration(0.5)")
    )
    out = tmp_path / "cli.mp4"
    result = CliRunner().invoke(cli, ["render", str(project / "short.html"), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    info = subprocess.run(
        [*PROBE_STREAM, "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert info == "320,240,30/1,15"


def test_props_reach_the_page_before_any_script(project: pathlib.Path, tmp_path: pathlib.Path) -> None:
    cfg = config(lossless=True).model_copy(update={"props": {"a": 42}})
    out = tmp_path / "props.mkv"
    render(project / "props.html", out, 0, 3, cfg)
    assert _rows(out) == [(42, 1, n) for n in range(3)]


@contextlib.contextmanager
def _slow_server(root: pathlib.Path, delay_s: float) -> Iterator[str]:
    """Serve `root` on another loopback origin, answering each request only after `delay_s` (a slow network)."""

    class Slow(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def send_head(self):  # type: ignore[no-untyped-def]
            time.sleep(delay_s)
            return super().send_head()

        def end_headers(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cache-Control", "max-age=3600")
            super().end_headers()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = LoopbackHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_posters_css_and_svg_images_are_loaded_before_frame_0(comp: pathlib.Path, tmp_path: pathlib.Path) -> None:
    for name, color in {"red": "red", "green": "lime", "blue": "blue", "mask": "white"}.items():
        picture = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=c={color}:s=1600x1200", "-frames:v", "1"]
        subprocess.run([*picture, str(comp / f"{name}.png")], check=True)
    out = tmp_path / "pictures.mkv"
    with _slow_server(comp, delay_s=0.7) as base:
        render(comp / "pictures.html", out, 0, 1, config(lossless=True).model_copy(update={"props": {"base": base}}))
    (frame,) = decode(out, 320, 240)
    centers = {"background": frame[60, 80], "mask": frame[60, 240], "svg": frame[180, 80], "poster": frame[180, 240]}
    expected = {"background": (255, 0, 0), "mask": (255, 255, 255), "svg": (0, 255, 0), "poster": (0, 0, 255)}
    for name, rgb in centers.items():
        assert np.abs(rgb.astype(int) - expected[name]).max() <= 8, (name, rgb)


def test_an_instance_set_up_after_a_slow_request_is_driven_from_frame_0(
    project: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    with _slow_server(project, delay_s=0.7) as base:
        cfg = config(lossless=True).model_copy(update={"props": {"base": base}})
        whole, chunk = _render_whole_and_chunk(project / "late_init.html", tmp_path, 12, 8, cfg=cfg)
    expected = [(n, n, 7) for n in range(12)]
    assert _rows(whole) == expected
    assert _rows(chunk) == expected[8:]


# --- media ------------------------------------------------------------------------------------------------


@pytest.fixture
def media_project(comp: pathlib.Path) -> pathlib.Path:
    """The media fixtures plus ramp.webm: 40 frames at 30 fps, frame k with luma 40 + 5k (lossless VP9)."""
    subprocess.run(
        [*RAMP_VIDEO, str(comp / "ramp.webm")],
        check=True,
    )
    return comp


def _quadrant_frames(path: pathlib.Path) -> list[list[float | None]]:
    """Which ramp frame each quadrant shows (None: black, no video there)."""
    shown = []
    for frame in decode(path, 320, 240, pix_fmt="gray"):
        row = []
        for top, left in ((0, 0), (0, 160), (120, 0), (120, 160)):
            level = float(frame[top + 30 : top + 90, left + 40 : left + 120].mean())
            row.append(None if level < 3 else (level * 219 / 255 + 16 - 40) / 5)
        shown.append(row)
    return shown


def _expected_quadrants(n: int) -> list[int | None]:
    t = n / 30
    top_left = max(0.0, t - 0.5)  # offset 0.5
    top_right = min(t + 0.3, 39 / 30)  # seek 0.3, held on its last frame
    bottom_left = (t * 2 + 0.01) % (40 / 30)  # loop, rate 2, seek 0.01
    bottom_right = None if n < 6 else (t - 0.2) * 0.5  # appeared at 200 ms, rate 0.5
    return [None if x is None else math.floor(x * 30 + 1e-6) for x in (top_left, top_right, bottom_left, bottom_right)]


def _assert_quadrants(path: pathlib.Path, first: int) -> None:
    for offset, row in enumerate(_quadrant_frames(path)):
        n = first + offset
        for got, want in zip(row, _expected_quadrants(n), strict=True):
            if want is None:
                assert got is None, (n, row)
            else:
                assert got is not None and abs(got - want) < 0.3, (n, row, _expected_quadrants(n))


def test_media_attributes_place_video_frames_whole_and_chunked(
    media_project: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    whole, chunk = _render_whole_and_chunk(media_project / "media.html", tmp_path, 31, 21)
    _assert_quadrants(whole, 0)
    _assert_quadrants(chunk, 21)


# --- audio discovery at run time -------------------------------------------------------------------------


def test_audio_discovery_finds_script_created_media_with_the_original_attributes(
    comp: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="helios.audio"):
        plan = discover_audio(str(comp / "audio.html"))
    tracks = {pathlib.Path(track.src).name: track for track in plan.tracks}
    assert sorted(tracks) == ["framed.wav", "late.wav", "sfx.wav", "shadow.wav", "tone.wav"]
    assert all(pathlib.Path(track.src).parent == comp for track in plan.tracks)  # served URLs → files
    music = tracks["tone.wav"]
    assert (music.start_s, music.seek_s, music.playback_rate, music.loop) == (1.0, 0.5, 2.0, True)
    assert (music.fade_in_s, music.fade_out_s, music.fade_easing, music.track_id) == (0.25, 0.5, "quad.in", "music")
    assert tracks["framed.wav"].start_s == 0.25  # in a same-origin iframe, data-helios-offset
    assert tracks["sfx.wav"].start_s == 0.5 and tracks["sfx.wav"].volume == 0.5  # created at 0.5 s, volume
    assert tracks["late.wav"].start_s == 0.0  # src set by script at 1 s; the element was there from the start
    assert "has no src" in caplog.text


def test_audio_discovery_on_a_helios_page_mixes_videos_at_their_own_volume(project: pathlib.Path) -> None:
    plan = discover_audio(str(project / "audio_helios.html"))
    # The original mixes every media element of a Helios page (muted ones at volume 0, so left out). The
    # DomDriver's fade-in set the element's volume to 0 at t = 0: the track keeps the element's own volume.
    # Track volumes and mutes set on the instance apply, as its DomDriver applies them.
    assert [(pathlib.Path(t.src).name, t.volume, t.fade_in_s, t.track_id) for t in plan.tracks] == [
        ("clip.webm", 1.0, 1.0, None),
        ("voice.wav", 0.5, 0.0, "voice"),
    ]


# --- the example -----------------------------------------------------------------------------------------


def test_the_helios_example_renders_at_its_instance_settings(tmp_path: pathlib.Path) -> None:
    if not (EXAMPLE / "node_modules/@helios-project/core/dist/index.js").is_file():
        pytest.skip("examples/helios-counter/node_modules is not installed (run ./dev setup; it needs npm)")
    assert page_settings(str(EXAMPLE)) == PageSettings(width=1280, height=720, fps=30, duration=4)
    out = tmp_path / "example.mkv"
    render(EXAMPLE, out, 59, 2, config(width=320, height=180, lossless=True))
    frames = decode(out, 320, 180).astype(int)
    assert frames.shape[0] == 2
    assert frames.std() > 10  # drawn, not blank
    assert np.abs(frames[0] - frames[1]).max() > 50  # the counter moved from 59 to 60
