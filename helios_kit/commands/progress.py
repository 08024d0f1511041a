"""The terminal progress of `helios job run`: chunks and frames done, frames/s and ETA, drawn with rich.

An event sink: the executor and the run emit :class:`~helios_kit.protocol.ProgressEvent` objects, this draws
them on stderr; the JobManager's records are another sink of the same events.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from helios_kit.protocol import EventKind, ProgressEvent
from helios_kit.spec import JobSpec


class RichProgress:
    """An event sink drawing chunks and frames done, frames/s and ETA with rich (on stderr)."""

    def __init__(self, spec: JobSpec, *, console: Any = None, selected: Iterable[int] | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        ids = set(selected) if selected is not None else {chunk.id for chunk in spec.chunks}
        frames = sum(chunk.frame_count for chunk in spec.chunks if chunk.id in ids)
        # the real stderr, fixed now, and no stream redirection: workers' threads may write while the bar draws
        self.console = console or Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.chunks_task = self.progress.add_task("chunks", total=len(ids), rate="")
        self.frames_task = self.progress.add_task("frames", total=frames, rate="")
        self.started = time.monotonic()
        self.rendered_frames = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind in (EventKind.RENDERED, EventKind.SKIPPED):
            self.progress.advance(self.chunks_task)
            self.progress.advance(self.frames_task, event.frames)
            if event.kind is EventKind.RENDERED:
                self.rendered_frames += event.frames
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.progress.update(self.frames_task, rate=f"{self.rendered_frames / elapsed:.1f} frames/s")
        elif event.kind in (EventKind.RETRYING, EventKind.FAILED):
            self.progress.console.print(
                f"chunk {event.chunk_id}: {event.kind.value}: {event.error}"
                + (f" (next try in {event.delay_s:.1f} s)" if event.delay_s else "")
            )
        elif event.kind is EventKind.MERGE_STARTED:
            self.progress.console.print("merging…")
        elif event.kind is EventKind.RESOLVED:
            self.progress.console.print(f"composition: {event.output}")
