"""Progress output: plain lines off a terminal, a rich bar on one, nothing when quiet."""

from __future__ import annotations

import io

from helios_kit.render.progress import RenderProgress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with RenderProgress("out.mp4", 10, stream=stream, log_every_s=0) as progress:
        for done in range(1, 11):
            progress(done, 10)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "rendering out.mp4: 10 frames"
    assert lines[1].startswith("out.mp4: 1/10 frames, ") and " fps, ETA " in lines[1]
    assert any(line.startswith("out.mp4: 10/10 frames") for line in lines)
    assert lines[-1].startswith("out.mp4: done, 10 frames in ")


def test_log_lines_are_throttled() -> None:
    stream = io.StringIO()
    with RenderProgress("x", 1000, stream=stream, log_every_s=3600) as progress:
        for done in range(1, 1001):
            progress(done, 1000)
    # header, the first update, the final update, the summary
    assert len(stream.getvalue().splitlines()) == 4


def test_quiet_prints_nothing() -> None:
    stream = _Tty()
    with RenderProgress("x", 5, stream=stream, quiet=True) as progress:
        progress(5, 5)
    assert stream.getvalue() == ""


def test_rich_bar_on_a_terminal() -> None:
    stream = _Tty()
    with RenderProgress("clip.mp4", 4, stream=stream) as progress:
        for done in range(1, 5):
            progress(done, 4)
    text = stream.getvalue()
    assert "clip.mp4" in text and "4/4" in text and "fps" in text and "ETA" in text
