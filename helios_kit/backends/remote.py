"""Helpers for backends whose chunks run elsewhere (Lambda, Cloud Run, a third party's cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """The chunk's cancel event was set or its timeout passed while the remote call was still running."""


def call_interruptibly(fn: Callable[[], T], cancel: threading.Event, timeout: float | None) -> T:
    """Run the blocking `fn` in a helper thread; give up (raise Interrupted) on cancel or timeout.

    The remote work may go on after we stop waiting; that is harmless because a worker's commit is atomic
    and idempotent, and the store, not this call, decides what is done.
    """
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=target, name="helios-remote-call", daemon=True).start()
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        try:
            return future.result(timeout=0.05)
        except FutureTimeout:
            if cancel.is_set():
                raise Interrupted("cancelled") from None
            if deadline is not None and time.monotonic() >= deadline:
                raise Interrupted(f"no answer within {timeout:g} s") from None
