"""The public Python API from the package root: `import helios_kit` stays cheap; render, plan, run_job and
batch work with a progress callback and honour a cancel token (real Chromium and ffmpeg, 64x48, 2 frames)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import helios_kit
from helios_kit.errors import SpecError
from helios_kit.probe import probe
from helios_kit.protocol import EventKind
from helios_kit.render.audio import discover_audio
from helios_kit.render.encode import find_ffmpeg
from helios_kit.spec import JobSpec

PAGE = """<!doctype html><html><head>
<meta name="helios" content='{"width": 64, "height": 48, "fps": 10, "duration": 0.2, "props": {"color": "#0000ff"}}'>
<style>html,body{margin:0}#box{position:absolute;inset:0}</style></head>
<body><div id="box"></div><script>
  document.getElementById("box").style.background = window.helios.props.color;
</script></body></html>
"""


@pytest.fixture
def card(tmp_path: Path) -> Path:
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "index.html").write_text(PAGE)
    return tmp_path / "card"


def test_import_is_cheap_and_names_resolve_lazily() -> None:
    code = (
        "import sys, helios_kit; heavy = [m for m in ('helios_kit.api', 'pydantic', 'rich', 'doit', "
        "'helios_kit.render.session') if m in sys.modules]; print(heavy); "
        "print(callable(helios_kit.render), callable(helios_kit.batch), callable(helios_kit.run_job)); "
        "import helios_kit.render.session as s; print(s.__name__, callable(helios_kit.render), "
        "helios_kit.render.session.render_range is s.render_range)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "[]",
        "True True True",
        "helios_kit.render.session True True",
    ]


def test_unknown_settings_are_one_line_naming_them(card: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown setting 'colour'"):
        helios_kit.plan(card, colour="red")
    with pytest.raises(SpecError, match=r"store: not a batch setting"):
        helios_kit.batch(card, [{"id": "a"}], output=str(tmp_path / "o/{id}.mp4"), store="x")


def test_plan_returns_a_jobspec_and_can_write_it(card: Path, tmp_path: Path) -> None:
    spec = helios_kit.plan(card, job_file=tmp_path / "job.json", chunks=2, props={"color": "#ff0000"})
    assert isinstance(spec, JobSpec)
    assert spec.config.frame_count == 2 and len(spec.chunks) == 2
    assert spec.config.props == {"color": "#ff0000"} and spec.config.input == "card/index.html"
    assert (tmp_path / "job.json").exists()


@pytest.mark.render
def test_render_reports_progress_and_a_set_cancel_token_stops_it(card: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    stats = helios_kit.render(card, tmp_path / "one.mp4", progress=lambda done, total: seen.append((done, total)))
    assert stats.frames == 2 and (tmp_path / "one.mp4").stat().st_size > 0
    assert seen and seen[-1] == (2, 2)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(helios_kit.render.RenderCancelled):
        helios_kit.render(card, tmp_path / "two.mp4", cancel=cancel)
    assert not (tmp_path / "two.mp4").exists()


LONG_PAGE_WITH_AUDIO = """<!doctype html><html><head>
<meta name="helios" content='{"width": 64, "height": 48, "fps": 10, "duration": 120}'>
</head><body><script>
  const track = document.createElement("audio");
  track.src = "missing.ogg";
  document.body.append(track);
</script></body></html>
"""


def _sound_composition(tmp_path: Path) -> Path:
    """A page whose script adds an <audio> (0.3 s of video, a 1 s tone)."""
    comp = tmp_path / "sound"
    comp.mkdir()
    tone = [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(comp / "tone.ogg")]
    subprocess.run(tone, check=True)
    html = LONG_PAGE_WITH_AUDIO.replace('"duration": 120', '"duration": 0.3').replace("missing.ogg", "tone.ogg")
    (comp / "index.html").write_text(html)
    return comp


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each Chromium launched, in order."""
    from helios_kit.render.browser import Browser

    started: list[int] = []
    launch = Browser.__init__

    def counted(self: Browser, *args: object, **kwargs: object) -> None:
        started.append(len(started))
        launch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Browser, "__init__", counted)
    return started


@pytest.mark.render
@pytest.mark.parametrize("parts", [1, 2])
def test_render_mixes_the_audio_its_scripts_add_from_its_own_page(
    tmp_path: Path, launches: list[int], parts: int
) -> None:
    """The render's own page (the last part's) reports the media it showed; no browser steps it again."""
    comp = _sound_composition(tmp_path)
    stats = helios_kit.render(comp, tmp_path / "out.mp4", parts=parts)
    info = probe(tmp_path / "out.mp4")
    assert stats.frames == 3 and info.frame_count == 3
    assert info.audio_codec == "aac" and info.audio_duration_s == pytest.approx(0.3, abs=0.03)
    assert stats.media is not None and [element.tag for element in stats.media.elements] == ["audio"]
    assert len(launches) == parts  # the render's browsers only


@pytest.mark.render
def test_a_render_whose_page_cannot_say_steps_it_again_for_the_audio(
    tmp_path: Path, launches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import helios_kit.render.session as session

    monkeypatch.setattr(session, "shown_media", lambda *args: None)
    comp = _sound_composition(tmp_path)
    stats = helios_kit.render(comp, tmp_path / "out.mp4")
    assert stats.media is None
    assert probe(tmp_path / "out.mp4").audio_codec == "aac"
    assert len(launches) == 2  # the render's, then discovery's


@pytest.mark.render
def test_a_render_that_stops_looks_for_no_audio(tmp_path: Path, launches: list[int]) -> None:
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "index.html").write_text(LONG_PAGE_WITH_AUDIO)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(helios_kit.render.RenderCancelled):
        helios_kit.render(tmp_path / "long", tmp_path / "out.mp4", cancel=cancel)
    assert launches == []


def test_audio_discovery_stops_when_told(tmp_path: Path) -> None:
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "index.html").write_text(LONG_PAGE_WITH_AUDIO)
    stop = threading.Event()
    stop.set()
    with pytest.raises(helios_kit.render.RenderCancelled, match="audio discovery: cancelled"):
        discover_audio(str(tmp_path / "long"), fps=10, frame_count=1200, cancel=stop)


@pytest.mark.render
def test_run_job_and_batch_with_progress_and_cancel(card: Path, tmp_path: Path) -> None:
    spec = helios_kit.plan(card, output="job.mp4", chunks=1)
    events = []
    report = helios_kit.run_job(spec, job_dir=tmp_path, progress=events.append, retries=0)
    assert report.ok, report.summary_line()
    assert (tmp_path / "job.mp4").exists()
    assert [event.kind for event in events if event.kind in (EventKind.RENDERED, EventKind.MERGED)] == [
        EventKind.RENDERED,
        EventKind.MERGED,
    ]

    batch_events = []
    rows = [{"id": "a", "color": "#ff0000"}, {"id": "b", "color": "#00ff00"}]
    out = str(tmp_path / "out" / "{id}.mp4")
    result = helios_kit.batch(card, rows, output=out, progress=batch_events.append, concurrency=1)
    assert result.ok, result.summary_line()
    merged = sorted(e.output for e in batch_events if e.event.kind is EventKind.MERGED)
    assert merged == ["a.mp4", "b.mp4"]

    cancel = threading.Event()
    cancel.set()
    stopped = helios_kit.batch(card, rows, output=out, cancel=cancel, force=True)
    assert stopped.cancelled and not stopped.ok


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.render
@pytest.mark.parametrize("parts", [1, 2])
def test_a_render_names_the_urls_its_page_could_not_load(
    card: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, parts: int
) -> None:
    """A picture from a host that refuses: the video renders without it, and says so once, naming the URL
    (the composition's own missing file is named by the other warning, not this one)."""
    url = f"http://127.0.0.1:{_closed_port()}/logo.png"
    extra = f'<img src="{url}"><img src="{url}"><img src="photos/typo.png">'
    (card / "index.html").write_text(PAGE.replace('<div id="box"></div>', '<div id="box"></div>' + extra))
    with caplog.at_level("WARNING", logger="helios.api"):
        stats = helios_kit.render(card, tmp_path / "out.mp4", parts=parts)
    assert stats.failed_loads == [f"{url} (net::ERR_CONNECTION_REFUSED)"]
    lines = [record.getMessage() for record in caplog.records if record.name == "helios.api"]
    (failed,) = [line for line in lines if "could not load" in line]
    assert url in failed and "typo.png" not in failed
    assert any("photos/typo.png" in line and "does not have" in line for line in lines)


@pytest.mark.render
def test_a_render_names_the_files_its_page_asked_for_and_its_folder_lacks(
    card: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    page = PAGE.replace('<div id="box"></div>', '<div id="box"></div><img src="photos/typo.png">')
    (card / "index.html").write_text(page)
    with caplog.at_level("WARNING", logger="helios.api"):
        helios_kit.render(card, tmp_path / "out.mp4")
    (line,) = [record.getMessage() for record in caplog.records if record.name == "helios.api"]
    assert "photos/typo.png" in line and "does not have" in line

    (card / "photos").mkdir()
    subprocess.run([find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "color=red:s=8x8", "-frames:v", "1",
                    str(card / "photos" / "typo.png")], check=True)  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING", logger="helios.api"):
        helios_kit.render(card, tmp_path / "again.mp4")
    assert [record for record in caplog.records if record.name == "helios.api"] == []
