"""Per-frame progress of remote workers through the artifact store: a heartbeat object beside the output.

A worker with no pipe to its client (Lambda, Cloud Run, Dask) writes `<output>.progress.json`, a
:class:`~helios_kit.protocol.FrameProgress`, at most every `interval` seconds while it renders
(:class:`StoreHeartbeat`, the render's progress callback) and removes it after its commit. The client's
:class:`~helios_kit.backends.remote.RemoteBackend` reads it (one :class:`HeartbeatPoller` for all its
chunks) while its call is in flight and forwards the frames to the executor. A heartbeat older than the
attempt (a crashed earlier attempt's) is ignored; an unreadable one is skipped, never an error: progress
must not fail a chunk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from helios_kit.protocol import FrameProgress

if TYPE_CHECKING:
    from helios_kit.store import ArtifactStore

log = logging.getLogger("helios.heartbeat")

SUFFIX = ".progress.json"
#: Chunks in flight in one folder from which the poller lists the folder (one request for all of them, at
#: most every poll interval) and reads only the heartbeats that are new or changed since its last read.
LIST_FROM = 2
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


@dataclass(eq=False)
class _Watched:
    """One chunk whose heartbeat the poller reads."""

    store: ArtifactStore
    rel: str
    on_frames: Callable[[int], None]
    since: float
    due: float
    last: int = -1
    seen: tuple[object, ...] | None = None  # the heartbeat's listing signature when last read


@dataclass(eq=False)
class _Listing:
    """One folder's heartbeats as last listed: their signatures (etag/mtime, size) by path."""

    at: float = float("-inf")
    beats: dict[str, tuple[object, ...]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class HeartbeatPoller:
    """Reads the heartbeats of every chunk in flight from ONE thread (not a thread per chunk), each chunk at
    most every `interval` s and all of them together at most `reads_per_s` times a second (100 Lambda chunks
    at once: each every 5 s); the reads of one round go out concurrently on `readers` threads. The thread
    starts with the first chunk watched and ends when none is left.

    With :data:`LIST_FROM` or more chunks in one folder of an object store, a read first looks at a listing
    of the folder (made at most every `interval` s, shared by all its chunks) and asks for the heartbeat only
    when the listing shows one newer than the last read: a fan-out whose chunks have written nothing costs
    one listing per interval instead of a GET per chunk."""

    def __init__(self, *, interval: float = POLL_INTERVAL_S, reads_per_s: float = 20.0, readers: int = 4) -> None:
        self.interval = interval
        self.reads_per_s = reads_per_s
        self.readers = readers
        self._watched: set[_Watched] = set()
        self._stores: dict[str, ArtifactStore] = {}
        self._listings: dict[tuple[int, str], _Listing] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, store_url: str, rel: str, on_frames: Callable[[int], None]) -> Callable[[], None]:
        """Start reading `rel`'s heartbeat (the first read one pace interval from now); returns the function
        that stops it."""
        from helios_kit.store import ArtifactStore

        with self._wake:
            store = self._stores.get(store_url)
            if store is None:
                try:
                    store = self._stores[store_url] = ArtifactStore(store_url)
                except Exception as error:  # an unusable store fails the chunk elsewhere, with a better message
                    log.debug("no heartbeat polling of %s: %s", store_url, error)
                    return lambda: None
            entry = _Watched(store, rel, on_frames, time.time(), 0.0)
            self._watched.add(entry)
            entry.due = time.monotonic() + self._pace()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="helios-heartbeats", daemon=True)
                self._thread.start()
            self._wake.notify()

        def stop() -> None:
            with self._wake:
                self._watched.discard(entry)
                self._wake.notify()  # the last chunk gone: the thread ends now

        return stop

    def _pace(self) -> float:
        """Seconds between two reads of one chunk: every chunk in flight shares `reads_per_s`."""
        return max(self.interval, len(self._watched) / self.reads_per_s)

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.readers, thread_name_prefix="helios-heartbeat") as pool:
            while True:
                with self._wake:
                    if not self._watched:
                        self._thread = None
                        return
                    now = time.monotonic()
                    due = [entry for entry in self._watched if entry.due <= now]
                    pace = self._pace()
                    for entry in due:
                        entry.due = now + pace
                    if not due:
                        self._wake.wait(min(entry.due for entry in self._watched) - now)
                        continue
                list(pool.map(self._read, due))

    def _read(self, entry: _Watched) -> None:
        if entry not in self._watched:  # stopped while queued
            return
        if not self._changed(entry):
            return
        beat = read_heartbeat(entry.store, entry.rel)
        if beat is None or beat.at < entry.since - STALE_MARGIN_S or beat.frames == entry.last:
            return
        entry.last = beat.frames
        if entry in self._watched:
            entry.on_frames(beat.frames)

    def _changed(self, entry: _Watched) -> bool:
        """Whether `entry`'s heartbeat may be new: always, unless its folder is listed (enough chunks in it)
        and the listing shows no heartbeat, or the one already read."""
        path = entry.store.path(heartbeat_name(entry.rel))
        folder = path.rpartition("/")[0]
        with self._wake:
            if entry.store.is_local or sum(1 for o in self._watched if o.store is entry.store) < LIST_FROM:
                return True  # a local read costs no request
            listing = self._listings.setdefault((id(entry.store), folder), _Listing())
        beats = self._list(entry.store, folder, listing)
        if beats is None:  # the listing failed: read the heartbeat itself
            return True
        seen = beats.get(entry.store.fs._strip_protocol(path))
        if seen is None or seen == entry.seen:
            return False
        entry.seen = seen
        return True

    def _list(self, store: ArtifactStore, folder: str, listing: _Listing) -> dict[str, tuple[object, ...]] | None:
        """The heartbeats in `folder` by path, listed again when the last listing is one pace interval old
        (a listing of a big folder costs the client more CPU than a GET)."""
        with listing.lock:
            if time.monotonic() - listing.at < self._pace():  # as often as each chunk may be read
                return listing.beats
            listing.at = time.monotonic()
            try:
                found = store.fs.ls(folder, detail=True, refresh=True)
            except FileNotFoundError:
                found = []
            except Exception as error:
                log.debug("heartbeats in %s not listed: %s", folder, error)
                listing.beats = None
                return None
            listing.beats = {
                store.fs._strip_protocol(info["name"]): _signature(info)
                for info in found
                if str(info.get("name", "")).endswith(SUFFIX)
            }
            return listing.beats


def _signature(info: dict[str, object]) -> tuple[object, ...]:
    """What changes when a heartbeat is written again (S3/GCS: its etag, memory://: its time), and its size."""
    return tuple(info.get(key) for key in ("ETag", "etag", "md5Hash", "LastModified", "updated", "created", "size"))
