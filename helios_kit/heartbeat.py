"""Per-frame progress of remote workers through the artifact store: a heartbeat object beside the output.

A worker with no pipe to its client (Lambda, Cloud Run, Dask) writes `<output>.progress.json`, a
:class:`~helios_kit.protocol.FrameProgress`, at most every `interval` seconds while it renders
(:class:`StoreHeartbeat`, the render's progress callback) and removes it after its commit. The client's
:class:`~helios_kit.backends.remote.RemoteBackend` polls it (:func:`poll_heartbeat`) while its call is in
flight and forwards the frames to the executor. A heartbeat older than the attempt (a crashed earlier
attempt's) is ignored; an unreadable one is skipped, never an error: progress must not fail a chunk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from helios_kit.protocol import FrameProgress

if TYPE_CHECKING:
    from helios_kit.store import ArtifactStore

log = logging.getLogger("helios.heartbeat")

SUFFIX = ".progress.json"
#: Seconds between two heartbeat writes of one worker.
WRITE_INTERVAL_S = 2.0
#: Seconds between two polls of the client.
POLL_INTERVAL_S = 1.0
#: A heartbeat written this long before the attempt started is an earlier attempt's (clock skew allowed).
STALE_MARGIN_S = 5.0


def heartbeat_name(rel: str) -> str:
    return rel + SUFFIX


class StoreHeartbeat:
    """A render progress callback `(done, total)` writing the chunk's FrameProgress to the store, at most
    every `interval` seconds (the first frame at once)."""

    def __init__(self, store: ArtifactStore, rel: str, chunk_id: int, *, interval: float | None = None) -> None:
        self.store = store
        self.path = store.path(heartbeat_name(rel))
        self.chunk_id = chunk_id
        self.interval = WRITE_INTERVAL_S if interval is None else interval
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        body = FrameProgress(chunk_id=self.chunk_id, frames=done, total=total).model_dump_json(by_alias=True)
        try:
            self.store.fs.pipe_file(self.path, body.encode())
        except Exception as error:  # progress is best effort: the render goes on
            log.debug("heartbeat %s not written: %s", self.path, error)

    def clear(self) -> None:
        """Remove the heartbeat (no request when none was written: a short chunk never wrote one)."""
        if self._last == float("-inf"):
            return
        with contextlib.suppress(Exception):
            self.store.fs.rm(self.path)


def read_heartbeat(store: ArtifactStore, rel: str) -> FrameProgress | None:
    """The chunk's latest heartbeat, or None (absent, being written, not one)."""
    from helios_kit.store import read_bytes

    try:
        data = read_bytes(store.fs, store.path(heartbeat_name(rel)))
        return FrameProgress.model_validate_json(data)
    except (FileNotFoundError, ValidationError, ValueError):
        return None
    except Exception as error:
        log.debug("heartbeat of %s not read: %s", rel, error)
        return None


def poll_heartbeat(
    store: ArtifactStore,
    rel: str,
    on_frames: Callable[[int], None],
    stop: threading.Event,
    *,
    since: float,
    interval: float = POLL_INTERVAL_S,
) -> None:
    """Until `stop` is set: read the heartbeat every `interval` s; call `on_frames` with new frame counts
    of heartbeats written after `since` (Unix time, minus a margin for clock skew)."""
    last = -1
    while not stop.wait(interval):
        beat = read_heartbeat(store, rel)
        if beat is None or beat.at < since - STALE_MARGIN_S or beat.frames == last:
            continue
        last = beat.frames
        on_frames(beat.frames)


def start_polling(
    store_url: str, rel: str, on_frames: Callable[[int], None], *, interval: float = POLL_INTERVAL_S
) -> threading.Event:
    """Poll in a daemon thread; returns the event that stops it."""
    from helios_kit.store import ArtifactStore

    stop = threading.Event()
    try:
        store = ArtifactStore(store_url)
    except Exception as error:  # an unusable store fails the chunk elsewhere, with a better message
        log.debug("no heartbeat polling of %s: %s", store_url, error)
        return stop
    since = time.time()
    thread = threading.Thread(
        target=poll_heartbeat,
        args=(store, rel, on_frames, stop),
        kwargs={"since": since, "interval": interval},
        name="helios-heartbeat",
        daemon=True,
    )
    thread.start()
    return stop
