"""The cancel marker: how a job's cancel reaches workers that the client cannot stop (Lambda, Cloud Run, Dask).

A client that stops waiting for a remote invocation does not stop it: it would render on, bill, and commit.
So a cancelled run writes `<store>/.helios/cancel/<job_id>.json` (a :class:`CancelMarker`), and every worker
rendering a chunk of that job watches for it (:class:`CancelWatch`, a small poller thread that sets the
render's cancel event; the render checks that event between frames), so an invocation stops within
`HELIOS_CANCEL_POLL` seconds (default 2) plus one frame and commits nothing.

* :func:`write_marker` — `helios job cancel` (through the run's cancel event, see
  :class:`MarkerOnCancel`) writes it; the write is atomic (the store's own write).
* :func:`clear_marker` — a new run of the job removes an old marker first, so a job once cancelled can run
  again.
* :func:`marker_present` — one existence check (a HEAD on an object store).

The marker lives beside the chunk outputs (the store layout is store.py's; `.helios/` is ours and never part
of a job's outputs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from helios_kit.store import ArtifactStore

log = logging.getLogger("helios.cancel")

MARKER_DIR = ".helios/cancel"
POLL_ENV_VAR = "HELIOS_CANCEL_POLL"
DEFAULT_POLL_S = 2.0


class CancelMarker(BaseModel):
    """What a cancel marker records."""

    job_id: str
    at: float = Field(default_factory=time.time, description="When the cancel was asked (Unix time).")
    reason: str = "cancelled"


def marker_rel(job_id: str) -> str:
    """The marker's path relative to the store root."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id) or "_"
    return f"{MARKER_DIR}/{safe}.json"


def write_marker(store: ArtifactStore, job_id: str, reason: str = "cancelled") -> None:
    """Ask every worker of `job_id` that renders into `store` to stop."""
    data = CancelMarker(job_id=job_id, reason=reason).model_dump_json().encode()
    store.write_bytes(marker_rel(job_id), data)


def clear_marker(store: ArtifactStore, job_id: str) -> None:
    """Remove the marker of an earlier cancelled run (nothing when there is none)."""
    path = store.path(marker_rel(job_id))
    try:
        store.fs.rm(path)
    except FileNotFoundError:
        pass
    except Exception as error:  # an unreadable store fails the run later with its own line
        log.debug("cannot clear the cancel marker %s: %s", path, error)


def marker_present(store: ArtifactStore, job_id: str) -> bool:
    from helios_kit.store import object_exists

    path = store.path(marker_rel(job_id))
    try:
        return object_exists(store.fs, path)
    except Exception as error:  # a blip: look again next time
        log.debug("cannot check the cancel marker %s: %s", path, error)
        return False


def poll_interval() -> float:
    try:
        value = float(os.environ.get(POLL_ENV_VAR, DEFAULT_POLL_S))
    except ValueError:
        return DEFAULT_POLL_S
    return value if value > 0 else DEFAULT_POLL_S


class CancelWatch:
    """While open, sets `cancel` as soon as the job's marker appears (checked at once, then every interval)."""

    def __init__(self, store: ArtifactStore, job_id: str, cancel: threading.Event, interval: float | None = None):
        self.store = store
        self.job_id = job_id
        self.cancel = cancel
        self.interval = interval if interval is not None else poll_interval()
        self.seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"helios-cancel-watch {job_id}", daemon=True)

    def _watch(self) -> None:
        while not self.cancel.is_set():
            if marker_present(self.store, self.job_id):
                self.seen = True
                log.info("job %s: cancel marker found in %s: stopping", self.job_id, self.store.url)
                self.cancel.set()
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class MarkerOnCancel:
    """Client side: writes the job's marker when the run's cancel event is set (by `helios job cancel`, a
    signal or the API); a run that ends without a cancel writes nothing."""

    def __init__(self, store: ArtifactStore, job_id: str, cancel: threading.Event) -> None:
        self.store = store
        self.job_id = job_id
        self.cancel = cancel
        self.written = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._wait, name=f"helios-cancel-marker {job_id}", daemon=True)

    def _wait(self) -> None:
        while not self._done.is_set():
            if self.cancel.wait(0.1):
                try:
                    write_marker(self.store, self.job_id)
                    self.written = True
                except Exception as error:
                    log.warning("job %s: cannot write the cancel marker to %s: %s", self.job_id, self.store.url, error)
                return

    def __enter__(self) -> MarkerOnCancel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if self.cancel.is_set() and not self.written:  # cancelled in the last instant of the run
            self._done.clear()
            self._wait()
