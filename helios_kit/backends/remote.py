"""Backends whose chunks run elsewhere and answer a WorkerResult (Lambda, Cloud Run, a third party's cluster).

:class:`RemoteBackend` holds what every such backend shares: the payload (a :class:`WorkerRequest` from
the chunk and its context), the blocking call made interruptible (cancel and timeout stop the wait, see
:func:`call_interruptibly`), parsing the worker's answer into a :class:`WorkerResult` (bad JSON or a
malformed answer is a failed, retryable result with one line), and turning transport failures into
failed results. A subclass only sends the request (`invoke`) and says what its own errors mean
(`describe_failure`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pydantic import ValidationError

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext
from helios_kit.composition.locations import is_local
from helios_kit.errors import describe
from helios_kit.protocol import WorkerRequest, WorkerResult
from helios_kit.spec import Chunk, JobSpec

T = TypeVar("T")

#: Seconds between looks at the cancel event and the deadline while a remote call runs (hundreds of calls
#: wait at once in a fan-out: a shorter period costs the client's CPU, a longer one delays a cancel).
CALL_POLL_S = 0.2
#: Characters of an unparseable answer quoted in the error line.
_QUOTED = 200


class Interrupted(Exception):
    """The chunk's cancel event was set or its timeout passed while the remote call was still running."""

    def __init__(self, message: str, *, cancelled: bool) -> None:
        super().__init__(message)
        self.cancelled = cancelled


class RemoteFailure(Exception):
    """A remote call that failed: one line naming what failed, and whether another attempt may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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
            return future.result(timeout=CALL_POLL_S)
        except FutureTimeout:
            if cancel.is_set():
                raise Interrupted("cancelled", cancelled=True) from None
            if deadline is not None and time.monotonic() >= deadline:
                raise Interrupted(f"no answer within {timeout:g} s", cancelled=False) from None


class RemoteBackend(Backend):
    """A backend that sends each chunk's WorkerRequest to a remote worker and reads back its WorkerResult."""

    #: How messages name the remote end (a function name, a service URL); set by the subclass.
    target: str = "the remote worker"

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning the first time `key` comes up (a setting wrong for every chunk of a job)."""
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logging.getLogger(f"helios.{self.name}").warning(message, *args)

    @abstractmethod
    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> Any:
        """Send `request` and block until the worker answers; return its answer (JSON bytes, text or an
        already decoded object). Raise RemoteFailure for a failure whose meaning the subclass knows (an HTTP
        status, a function error); any other exception goes through :meth:`describe_failure`."""

    def describe_failure(self, error: Exception) -> RemoteFailure:
        """What a transport error means (the subclass maps its client library's exceptions)."""
        return RemoteFailure(f"{self.target}: {describe(error)}", retryable=True)

    def check_chunk(self, spec: JobSpec, chunk: Chunk, context: ChunkContext) -> None:
        """Warn about a chunk this backend cannot run well (called before each invocation); by default, a
        job or store given as a local path, which a remote worker cannot reach."""
        for what, value in (("job", context.job_url), ("store", context.store_url)):
            if is_local(value):
                self.warn_once(
                    f"local:{what}",
                    "warning: %s: the %s %s is a local path; %s cannot read it (use an s3://, gs:// or https:// URL)",
                    self.name,
                    what,
                    value,
                    self.target,
                )

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        if cancel.is_set():
            return WorkerResult.cancelled(chunk.id)
        started = time.monotonic()
        self.check_chunk(spec, chunk, context)
        request = context.worker_request(chunk)
        result = self._call(request, cancel, timeout)
        return result.model_copy(update={"chunk_id": chunk.id, "duration_ms": (time.monotonic() - started) * 1000})

    def run_merge(
        self,
        spec: JobSpec,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult | None:
        """Merge next to the store: one request with ``merge`` set; the worker fetches the chunks from the
        store, stitches, mixes the audio and commits the output (helios_kit.worker.runtime.run_merge)."""
        if cancel.is_set():
            return WorkerResult.cancelled(None)
        request = WorkerRequest(job_url=context.job_url, chunk_id=0, store=context.store_url, merge=True)
        result = self._call(request, cancel, timeout)
        return result.model_copy(update={"chunk_id": None})

    def _call(self, request: WorkerRequest, cancel: threading.Event, timeout: float | None) -> WorkerResult:
        chunk_id = request.chunk_id
        try:
            answer = call_interruptibly(lambda: self.invoke(request, cancel=cancel, timeout=timeout), cancel, timeout)
        except Interrupted as stop:
            if stop.cancelled:
                return WorkerResult.cancelled(chunk_id)
            return WorkerResult.timed_out(chunk_id, f"chunk {chunk_id}: {self.target}: {stop}")
        except Exception as error:
            failure = error if isinstance(error, RemoteFailure) else self.describe_failure(error)
            return WorkerResult.failed(chunk_id, f"chunk {chunk_id}: {failure}", retryable=failure.retryable)
        return self.parse_answer(chunk_id, answer)

    def parse_answer(self, chunk_id: int, answer: Any) -> WorkerResult:
        """The worker's WorkerResult; a failed, retryable result with one line when the answer is not one."""
        try:
            body = json.loads(answer) if isinstance(answer, (bytes, bytearray, str)) else answer
            result = WorkerResult.model_validate(body)
        except (ValueError, ValidationError, TypeError, RecursionError):
            quoted = answer[:_QUOTED] if isinstance(answer, (bytes, bytearray, str)) else type(answer).__name__
            return WorkerResult.failed(
                chunk_id, f"chunk {chunk_id}: {self.target} answered no WorkerResult: {quoted!r}", retryable=True
            )
        return result
