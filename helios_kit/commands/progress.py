"""The terminal progress of `helios job run`: one bar over all the job's frames, with frames/s and ETA.

An event sink: the executor and the run emit :class:`~helios_kit.protocol.ProgressEvent` objects, this draws
them on stderr. Frames advance as workers report them (FRAMES events: a chunk's frames so far in its current
attempt), so a long chunk moves the bar while it renders; a finished chunk counts all its frames, a retried
one starts again from 0. frames/s counts frames rendered by this run (not chunks found complete), and the ETA
is the frames left at that rate. :class:`FrameTally` is the arithmetic, apart from the drawing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from helios_kit.protocol import EventKind, ProgressEvent
from helios_kit.spec import JobSpec


class FrameTally:
    """Frames done per chunk from progress events; frames/s and ETA of this run's rendering."""

    def __init__(self, spec: JobSpec, selected: Iterable[int] | None = None) -> None:
        ids = set(selected) if selected is not None else {chunk.id for chunk in spec.chunks}
        self.sizes = {chunk.id: chunk.frame_count for chunk in spec.chunks if chunk.id in ids}
        self.total = sum(self.sizes.values())
        self.done: dict[int, int] = {}
        self.finished: set[int] = set()
        self.skipped_frames = 0
        self.started: float | None = None
        self._lock = threading.Lock()

    def add(self, event: ProgressEvent, now: float | None = None) -> bool:
        """Count `event`; True when it changed the frames or chunks done."""
        chunk_id = event.chunk_id
        if chunk_id not in self.sizes or chunk_id in self.finished:
            return False
        size = self.sizes[chunk_id]
        with self._lock:
            if event.kind is EventKind.STARTED and self.started is None:
                self.started = time.monotonic() if now is None else now
            elif event.kind is EventKind.FRAMES:
                self.done[chunk_id] = min(max(event.frames, 0), size)
            elif event.kind in (EventKind.RENDERED, EventKind.SKIPPED):
                self.done[chunk_id] = size
                self.finished.add(chunk_id)
                if event.kind is EventKind.SKIPPED:
                    self.skipped_frames += size
            elif event.kind is EventKind.RETRYING:
                self.done[chunk_id] = 0
            else:
                return False
        return True

    @property
    def frames_done(self) -> int:
        return sum(self.done.values())

    @property
    def rendered_frames(self) -> int:
        return self.frames_done - self.skipped_frames

    def rate(self, now: float | None = None) -> float:
        """Frames/s rendered by this run since its first chunk started (0 before)."""
        if self.started is None:
            return 0.0
        elapsed = (time.monotonic() if now is None else now) - self.started
        return self.rendered_frames / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the current rate; None while unknown."""
        rate = self.rate(now)
        left = self.total - self.frames_done
        if left <= 0:
            return 0.0
        return left / rate if rate > 0 else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -:--:--"
    seconds = round(seconds)
    return f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RichProgress:
    """An event sink drawing one bar of the job's frames, chunks done, frames/s and ETA (rich, on stderr)."""

    def __init__(self, spec: JobSpec, *, console: Any = None, selected: Iterable[int] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

        self.tally = FrameTally(spec, selected)
        # the real stderr, fixed now, and no stream redirection: workers' threads may write while the bar draws
        self.console = console or Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.frames_task = self.progress.add_task(self._description(), total=self.tally.total, rate="", eta="")

    @property
    def rendered_frames(self) -> int:
        return self.tally.rendered_frames

    def _description(self) -> str:
        return f"frames ({len(self.tally.finished)}/{len(self.tally.sizes)} chunks)"

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self.tally.add(event):
            self.progress.update(
                self.frames_task,
                completed=self.tally.frames_done,
                description=self._description(),
                rate=f"{self.tally.rate():.1f} frames/s",
                eta=_clock(self.tally.eta_s()),
            )
        if event.kind in (EventKind.RETRYING, EventKind.FAILED):
            self.progress.console.print(
                f"chunk {event.chunk_id}: {event.kind.value}: {event.error}"
                + (f" (next try in {event.delay_s:.1f} s)" if event.delay_s else "")
            )
        elif event.kind is EventKind.MERGE_STARTED:
            self.progress.console.print("merging…")
        elif event.kind is EventKind.RESOLVED:
            self.progress.console.print(f"composition: {event.output}")
