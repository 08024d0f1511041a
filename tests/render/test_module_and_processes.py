"""ES-module folders render over 127.0.0.1; no Chromium or ffmpeg survives success, failure or cancel."""

from __future__ import annotations

import pathlib
import threading

import pytest
from fakes.jobs import wait_no_tagged_processes

from helios_kit.render import RenderCancelled
from tests.render.conftest import FIXTURES, decode, leftovers, render, tagged_processes

pytestmark = pytest.mark.render


def test_es_module_folder_renders(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "module.mp4"
    render(FIXTURES / "es_module", out, 10, 3)
    frames = decode(out, 320, 240)
    green = [int((f[120, :, 1] > 128).argmax()) for f in frames]  # left edge of the green box
    assert green == [40, 44, 48]


def test_no_processes_left_after_success_and_failure(tmp_path: pathlib.Path, process_tag: str) -> None:
    render(FIXTURES / "frame_index", tmp_path / "ok.mp4", 0, 3)
    assert wait_no_tagged_processes(process_tag, timeout=60) == []
    with pytest.raises(Exception, match="boom at seven"):
        render(FIXTURES / "errors" / "throws_at_frame.html", tmp_path / "bad.mp4", 0, 20)
    assert wait_no_tagged_processes(process_tag, timeout=60) == []


def test_cancel_stops_promptly_without_output(tmp_path: pathlib.Path, process_tag: str) -> None:
    out = tmp_path / "cancelled.mp4"
    cancel = threading.Event()
    seen: list[int] = []
    outcome: list[BaseException] = []
    alive_during: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 5:
            alive_during.extend(tagged_processes(process_tag))
            cancel.set()

    def run() -> None:
        try:
            render(FIXTURES / "frame_index", out, 0, 300, progress=progress, cancel=cancel)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert outcome and isinstance(outcome[0], RenderCancelled)
    assert alive_during, "the tag should have found Chromium and ffmpeg while rendering"
    assert max(seen) <= 6
    assert not out.exists() and leftovers(tmp_path) == []
    assert wait_no_tagged_processes(process_tag, timeout=60) == []
