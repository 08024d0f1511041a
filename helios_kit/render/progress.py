"""Render progress for people: a rich bar on a terminal (frames, fps, ETA), plain log lines otherwise.

``RenderProgress`` is a callable ``(frames_done, frame_count)``, the shape ``render_range(progress=...)``
takes. Use it as a context manager. ``quiet=True`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress


def _rich_bar(stream: IO[str]) -> Progress:
    """The terminal bar; rich is imported here, so a render whose output is not a terminal (a pipeline, a
    log, a worker) never loads it (~20 ms of start-up)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class FpsColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:5.1f} fps" if speed else "  ... fps", style="cyan")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        FpsColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )


class RenderProgress:
    """Progress of one render: ``with RenderProgress("out.mp4", total) as p: render_range(..., progress=p)``."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        log_every_s: float = 2.0,
    ) -> None:
        self.label = label
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.log_every_s = log_every_s
        self.done = 0
        self._start = time.monotonic()
        self._last_log = float("-inf")
        self._bar: Progress | None = None
        self._task_id: Any = None
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> RenderProgress:
        self._start = time.monotonic()
        if self.quiet:
            return self
        if self.is_tty:
            self._bar = _rich_bar(self.stream)
            self._bar.start()
            self._task_id = self._bar.add_task(self.label, total=self.total)
        else:
            self._line(f"rendering {self.label}: {self.total} frames")
        return self

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.quiet:
            return
        if self._bar is not None and self._task_id is not None:
            self._bar.update(self._task_id, completed=done, total=total)
            return
        now = time.monotonic()
        if done >= total or now - self._last_log >= self.log_every_s:
            self._last_log = now
            self._line(self.status_line())

    def status_line(self) -> str:
        """`label: done/total frames, X fps, ETA Ns` (the plain-text form)."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        fps = self.done / elapsed
        eta = (self.total - self.done) / fps if fps > 0 else float("nan")
        eta_text = f"{eta:.0f}s" if eta == eta else "?"
        return f"{self.label}: {self.done}/{self.total} frames, {fps:.1f} fps, ETA {eta_text}"

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif not self.quiet and exc[0] is None:
            elapsed = time.monotonic() - self._start
            self._line(f"{self.label}: done, {self.done} frames in {elapsed:.1f}s")
