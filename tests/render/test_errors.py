"""Each bad input ends in one RenderError line, with nothing left under the output name."""

from __future__ import annotations

import http.server
import pathlib
import threading
from collections.abc import Iterator
from functools import partial

import pytest
from fakes.loopback import LoopbackHTTPServer

from helios_kit.errors import RenderError
from tests.render.conftest import FIXTURES, config, leftovers, render

pytestmark = pytest.mark.render

ERRORS = FIXTURES / "errors"


def _fails(tmp_path: pathlib.Path, input_location: str | pathlib.Path, *args, **kw) -> str:
    out = tmp_path / "out.mp4"
    with pytest.raises(RenderError) as info:
        render(input_location, out, *(args or (0, 10)), **kw)
    message = str(info.value)
    assert "\n" not in message and message
    assert not out.exists()
    assert leftovers(tmp_path) == []
    return message


@pytest.fixture
def http_root(tmp_path: pathlib.Path) -> Iterator[str]:
    """A loopback HTTP server over a folder with one page, for URL inputs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.html").write_text("<body style='background:#0a0'>ok</body>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_missing_file(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, tmp_path / "nope.html")
    assert message.startswith("composition not found:") and "nope.html" in message


def test_folder_without_index(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    assert "no index.html" in _fails(out_dir, empty)


def test_url_with_error_status(tmp_path: pathlib.Path, http_root: str) -> None:
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    message = _fails(out_dir, http_root + "missing.html")
    assert "HTTP 404" in message and "missing.html" in message


def test_url_that_does_not_answer(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, "http://127.0.0.1:9/never.html")
    assert message.startswith("cannot load http://127.0.0.1:9/never.html: net::ERR_")


def test_url_that_works(tmp_path: pathlib.Path, http_root: str) -> None:
    out = tmp_path / "ok.mp4"
    stats = render(http_root + "ok.html", out, 0, 3)
    assert out.exists() and stats.frames == 3


def test_composition_that_throws_names_message_and_frame(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, ERRORS / "throws_at_frame.html", 0, 20)
    assert message.startswith("composition threw at frame 7:") and "boom at seven" in message


def test_composition_that_throws_while_fast_forwarding(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, ERRORS / "throws_at_frame.html", 12, 5)
    assert message.startswith("composition threw at frame 7:")


def test_composition_that_throws_on_load(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, ERRORS / "throws_on_load.html")
    assert "while loading" in message and "undefinedFunctionCalledOnLoad" in message


def test_composition_never_ready_times_out_naming_the_frame(tmp_path: pathlib.Path) -> None:
    # the timeout bounds the page load too: 5 s leaves a loaded machine room to load the page
    message = _fails(tmp_path, ERRORS / "never_ready.html", 0, 10, timeout_s=5)
    assert message.startswith("timeout: frame 3 never became ready")
    assert "waiting for data that never comes" in message


def test_delay_render_holds_each_frame_until_continued(tmp_path: pathlib.Path) -> None:
    from tests.render.conftest import decode

    out = tmp_path / "held.mp4"
    render(ERRORS / "delay_render_ok.html", out, 0, 6)
    frames = decode(out, 320, 240)
    assert [int(f.mean() > 128) for f in frames] == [0, 1, 0, 1, 0, 1]


def test_no_browser(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIOS_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-playwright"))
    monkeypatch.setenv("HELIOS_FFMPEG", "/usr/bin/ffmpeg")
    message = _fails(tmp_path, FIXTURES / "frame_index")
    assert message.startswith("no Chromium found:") and "HELIOS_CHROMIUM" in message


def test_bad_browser_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_CHROMIUM", str(tmp_path / "chrome"))
    assert "HELIOS_CHROMIUM" in _fails(tmp_path, FIXTURES / "frame_index")


def test_no_ffmpeg(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_FFMPEG", str(tmp_path / "ffmpeg"))
    assert "HELIOS_FFMPEG" in _fails(tmp_path, FIXTURES / "frame_index")


def test_output_dir_not_writable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RenderError) as info:
        render(FIXTURES / "frame_index", pathlib.Path("/proc/helios-out.mp4"), 0, 3)
    assert str(info.value).startswith("output directory not writable: /proc")


def test_output_dir_missing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RenderError) as info:
        render(FIXTURES / "frame_index", tmp_path / "no" / "out.mp4", 0, 3)
    assert str(info.value).startswith("output directory does not exist:")


@pytest.mark.parametrize(("start", "count", "fragment"), [(-1, 5, "start_frame"), (0, 0, "frame_count")])
def test_invalid_frame_range(tmp_path: pathlib.Path, start: int, count: int, fragment: str) -> None:
    assert fragment in _fails(tmp_path, FIXTURES / "frame_index", start, count)


def test_canvas_capture_without_a_canvas(tmp_path: pathlib.Path) -> None:
    message = _fails(tmp_path, FIXTURES / "frame_index", 0, 3, cfg=config(capture="canvas"))
    assert message.startswith("capture=canvas:")
