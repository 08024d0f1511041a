"""Hand out a range's frames to several capturing browsers (lanes) and give their images back in order.

A page only moves forward in virtual time, so each lane claims frames in increasing order: `claim` gives the
next unclaimed frame, whichever lane asks, so a slower lane (a heavier frame, a late launch, a restart)
simply takes fewer. Images arrive out of order (`deliver`) and leave in order (`take`), for one encoder.
A lane may claim at most `window` frames past the next one the encoder waits for, which bounds the images
held here. Any lane's failure (`fail`) or a cancel wakes every waiter; `take` then raises the first error.
"""

from __future__ import annotations

import threading

from helios_kit.render.page import RenderCancelled


class FrameOrder:
    """Frames [start, start + count): claimed in order by lanes, delivered in any order, taken in order."""

    def __init__(self, start: int, count: int, window: int, cancel: threading.Event | None = None) -> None:
        if count <= 0 or window <= 0:
            raise ValueError(f"count and window must be positive, got {count} and {window}")
        self.start = start
        self.stop = start + count
        self.window = window
        self.cancel = cancel
        self._next_claim = start
        self._next_take = start
        self._images: dict[int, bytes] = {}
        self._error: BaseException | None = None
        self._solo: int | None = None
        self._changed = threading.Condition()

    @property
    def stopped(self) -> bool:
        """A lane failed or the render was cancelled: lanes should stop."""
        return self._error is not None or (self.cancel is not None and self.cancel.is_set())

    def claim(self, lane: int) -> int | None:
        """The next unclaimed frame for `lane` (waiting while it is `window` ahead of the encoder); None when
        every frame is claimed, the render stopped, or another lane renders alone (see :meth:`go_solo`)."""
        with self._changed:
            while True:
                if self.stopped or self._solo not in (None, lane):
                    return None
                if self._next_claim >= self.stop:
                    return None
                if self._next_claim < self._next_take + self.window:
                    frame = self._next_claim
                    self._next_claim += 1
                    return frame
                self._wait()

    def go_solo(self, lane: int) -> bool:
        """Let `lane` render every frame still unclaimed (the others stop claiming); False when another
        lane already renders alone."""
        with self._changed:
            if self._solo is None:
                self._solo = lane
                self._changed.notify_all()
            return self._solo == lane

    def deliver(self, frame: int, image: bytes) -> None:
        """The image of a claimed `frame`."""
        with self._changed:
            if not self.start <= frame < self.stop or frame < self._next_take or frame in self._images:
                raise ValueError(f"frame {frame} was not waiting for an image")
            self._images[frame] = image
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """A lane failed: the render stops (the first failure is the one `take` raises)."""
        with self._changed:
            if self._error is None:
                self._error = error
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every waiter to look again (call after setting the cancel event)."""
        with self._changed:
            self._changed.notify_all()

    def take(self) -> tuple[int, bytes]:
        """The next frame in order and its image, once delivered; raises the first lane failure, or
        RenderCancelled after a cancel."""
        with self._changed:
            while True:
                if self._error is not None:
                    raise self._error
                if self.cancel is not None and self.cancel.is_set():
                    raise RenderCancelled("render cancelled")
                if self._next_take >= self.stop:
                    raise IndexError("every frame was taken")
                image = self._images.pop(self._next_take, None)
                if image is not None:
                    frame = self._next_take
                    self._next_take += 1
                    self._changed.notify_all()
                    return frame, image
                self._wait()

    def _wait(self) -> None:
        # A cancel is an Event, not this condition: wake now and then to see it even when nobody notifies.
        self._changed.wait(0.1 if self.cancel is not None else None)
