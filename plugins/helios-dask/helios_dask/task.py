"""What runs inside a Dask worker: one chunk through helios-kit's worker runtime, answered as a WorkerResult.

:func:`render_chunk` is the task the `dask` backend submits (by reference: every worker needs helios-dask
installed). It takes a :class:`~helios_kit.protocol.WorkerRequest` dumped to a dict, runs
``WorkerRuntime().run(job_url, chunk_id, store)`` (load the spec, resolve the composition, render, commit to
the store) and returns the WorkerResult dumped to a dict: only plain JSON data crosses the wire.

Cancellation: Dask cannot stop a running task's thread, so the client also sets a named
:class:`distributed.Event`; a watcher thread here looks at it twice a second and sets the runtime's cancel
event, which stops the render between frames. One runtime per workspace is kept for the worker's life (its
spec cache and composition cache make later chunks of the same job cheaper).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from helios_kit.protocol import WorkerRequest
from helios_kit.worker.runtime import WorkerRuntime, handle_request

#: Seconds between two looks at the cancel event (how long a cancelled render may go on).
CANCEL_POLL_S = 0.5

_runtimes: dict[str | None, WorkerRuntime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(workspace: str | None) -> WorkerRuntime:
    """This worker process's runtime for `workspace` (default: $HELIOS_WORKSPACE_DIR, else the temp dir)."""
    workspace = workspace or os.environ.get("HELIOS_WORKSPACE_DIR") or None
    with _runtimes_lock:
        runtime = _runtimes.get(workspace)
        if runtime is None:
            runtime = _runtimes[workspace] = WorkerRuntime(workspace)
        return runtime


def render_chunk(request: dict[str, Any], workspace: str | None = None, cancel_event: str | None = None) -> dict:
    """Render and commit one chunk; returns the WorkerResult as a JSON-ready dict (camelCase keys)."""
    parsed = WorkerRequest.model_validate(request)
    cancel = threading.Event()
    finished = threading.Event()
    if cancel_event:
        _watch_cancel(_event(cancel_event), cancel, finished)
    try:
        result = handle_request(runtime_for(workspace), parsed, cancel=cancel)
    finally:
        finished.set()  # the watcher ends after its current wait; the answer does not wait for it
    return {**result.model_dump(mode="json", by_alias=True), "worker": _worker_address()}


def _worker_address() -> str | None:
    """This Dask worker's address (the client block-lists workers that keep failing), None outside one."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _event(name: str) -> Any:
    """The Dask event `name`, through this worker's own client. Called in the task's thread: only there does
    get_client() know it runs on a worker (from another thread it would start a new cluster)."""
    from distributed import Event, get_client

    return Event(name, client=get_client())


def _watch_cancel(event: Any, cancel: threading.Event, finished: threading.Event) -> threading.Thread:
    """A thread that sets `cancel` once the client sets the Dask `event`, asking the scheduler every
    CANCEL_POLL_S until the task has `finished` (no wait is left pending in the scheduler after it)."""

    def watch() -> None:
        try:
            while not finished.wait(CANCEL_POLL_S):
                if event.is_set():
                    cancel.set()
                    event.clear()  # the scheduler forgets a cleared event nobody waits on
                    return
        except Exception:  # no scheduler to ask (it went away): the render goes on, its commit is idempotent
            return

    thread = threading.Thread(target=watch, name=f"helios-cancel-{event.name}", daemon=True)
    thread.start()
    return thread
