"""Backends whose chunks run elsewhere and answer a WorkerResult (Lambda, Cloud Run, a third party's cluster).

:class:`RemoteBackend` holds what every such backend shares: the payload (a :class:`WorkerRequest` from
the chunk and its context), the blocking call made interruptible (cancel and timeout stop the wait, see
:func:`call_interruptibly`), parsing the worker's answer into a :class:`WorkerResult` (bad JSON or a
malformed answer is a failed, retryable result with one line), and turning transport failures into
failed results. A subclass only sends the request (`invoke`) and says what its own errors mean
(`describe_failure`). While a call is in flight, the worker's heartbeat in the store (frames so far, see
:mod:`helios_kit.heartbeat`) is polled and passed to the executor's `on_frames`.

Throttling (Lambda's TooManyRequestsException, HTTP 429, Cloud Run's front-end 503) is the platform saying
"not now", not the chunk failing: a subclass raises :class:`Throttled` from the send it passes to
:meth:`RemoteBackend.send_with_throttle`, which backs off (jittered exponential) without spending one of the
executor's attempts, bounded in tries and total wait, logs one warning line per throttle (seen at the
default verbosity), and counts them into the result's `throttles`. A failure that no attempt can get past
for any chunk of the job (401/403, AccessDenied, a missing function) is a :class:`RemoteFailure` with
`fatal=True`: the result says so and the executor stops scheduling the job's other chunks.
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
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext
from helios_kit.composition.locations import is_local
from helios_kit.errors import describe
from helios_kit.protocol import FramesCallback, WorkerRequest, WorkerResult
from helios_kit.spec import Chunk, JobSpec

if TYPE_CHECKING:
    from helios_kit.heartbeat import HeartbeatPoller

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
    """A remote call that failed: one line naming what failed, whether another attempt may help, and whether
    the failure dooms every chunk of the job (`fatal`: credentials, permissions, a missing function)."""

    def __init__(self, message: str, *, retryable: bool, fatal: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable and not fatal
        self.fatal = fatal


class Throttled(Exception):
    """The platform refused the call for now (429, TooManyRequestsException): back off and send again."""


#: Defaults of the throttle back-off: at most this many sends and this many seconds of waiting per attempt.
THROTTLE_ATTEMPTS = 50
THROTTLE_MAX_WAIT_S = 300.0


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
    reports_frames = True
    #: Seconds between two reads of a running chunk's heartbeat (at least; see heartbeat_reads_per_s): as
    #: often as a worker writes it (heartbeat.WRITE_INTERVAL_S), since reading more often finds nothing new.
    heartbeat_poll_s: float = 2.0
    #: Heartbeat reads per second over all chunks in flight: 100 Lambda chunks at once poll every 5 s, 1,000
    #: every 50 s. Each read costs the client a request's CPU, and more of them the longer chunks run.
    heartbeat_reads_per_s: float = 20.0

    #: Remote chunks fail transiently more often (cold starts, networks): more retries by default.
    default_retries = 5

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()
        self._poller: HeartbeatPoller | None = None  # reads the heartbeats of all chunks in flight
        self._throttles: dict[int, int] = {}
        self.throttle_total = 0
        #: Chunk ids whose remote call has not returned (still running after a cancel or timeout stopped
        #: our wait): what :meth:`warn_in_flight` reports.
        self.in_flight: dict[int, int] = {}

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

    def send_with_throttle(
        self,
        request: WorkerRequest,
        send: Callable[[], T],
        cancel: threading.Event,
        *,
        attempts: int = THROTTLE_ATTEMPTS,
        max_wait: float = THROTTLE_MAX_WAIT_S,
    ) -> T:
        """`send()`, sent again after a back-off while it raises Throttled (not an executor attempt); the last
        Throttled propagates once `attempts` sends or `max_wait` seconds are spent, or on cancel."""
        log = logging.getLogger(f"helios.{self.name}")

        def before_sleep(state: RetryCallState) -> None:
            with self._warned_lock:
                self._throttles[id(request)] = self._throttles.get(id(request), 0) + 1
                self.throttle_total += 1
            delay = state.next_action.sleep if state.next_action else 0.0  # type: ignore[union-attr]
            error = state.outcome.exception() if state.outcome else None  # type: ignore[union-attr]
            log.warning(
                "chunk %s: %s throttled (%s); backing off %.1f s (not counted as an attempt)",
                request.chunk_id,
                self.target,
                error,
                delay,
            )

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, Throttled) and not cancel.is_set()),
            stop=stop_after_attempt(attempts) | stop_after_delay(max_wait),
            wait=wait_random_exponential(multiplier=0.25, max=20),
            sleep=lambda seconds: cancel.wait(seconds) and None,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(send)

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
        on_frames: FramesCallback | None = None,
    ) -> WorkerResult:
        if cancel.is_set():
            return WorkerResult.cancelled(chunk.id)
        started = time.monotonic()
        self.check_chunk(spec, chunk, context)
        request = context.worker_request(chunk)
        polling = self._poll_frames(context, chunk, on_frames)
        try:
            result = self._call(request, cancel, timeout)
        finally:
            if polling is not None:
                polling()
            with self._warned_lock:
                throttles = self._throttles.pop(id(request), 0)
        update = {"chunk_id": chunk.id, "duration_ms": (time.monotonic() - started) * 1000, "throttles": throttles}
        return result.model_copy(update=update)

    def _poll_frames(
        self, context: ChunkContext, chunk: Chunk, on_frames: FramesCallback | None
    ) -> Callable[[], None] | None:
        """Start reading the chunk's heartbeat (returns the function that stops it) on the backend's one
        poller, at a pace that keeps the reads of all chunks in flight under heartbeat_reads_per_s."""
        if on_frames is None:
            return None
        with self._warned_lock:
            if self._poller is None:
                from helios_kit.heartbeat import HeartbeatPoller

                self._poller = HeartbeatPoller(interval=self.heartbeat_poll_s, reads_per_s=self.heartbeat_reads_per_s)
        return self._poller.watch(context.store_url, chunk.output_file, on_frames)

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
        stderr = result.stderr.replace("chunk 0: ", "merge: ", 1)  # the request's chunk id means nothing here
        return result.model_copy(update={"chunk_id": None, "stderr": stderr})

    def _call(self, request: WorkerRequest, cancel: threading.Event, timeout: float | None) -> WorkerResult:
        chunk_id = request.chunk_id
        try:
            answer = call_interruptibly(lambda: self._tracked(request, cancel, timeout), cancel, timeout)
        except Interrupted as stop:
            if stop.cancelled:
                return WorkerResult.cancelled(chunk_id)
            return WorkerResult.timed_out(chunk_id, f"chunk {chunk_id}: {self.target}: {stop}")
        except Throttled as error:
            message = f"chunk {chunk_id}: {self.target} still throttled ({error}) after backing off"
            return WorkerResult.failed(chunk_id, message, retryable=True)
        except Exception as error:
            failure = error if isinstance(error, RemoteFailure) else self.describe_failure(error)
            result = WorkerResult.failed(chunk_id, f"chunk {chunk_id}: {failure}", retryable=failure.retryable)
            return result.model_copy(update={"fatal": failure.fatal}) if failure.fatal else result
        return self.parse_answer(chunk_id, answer)

    def _tracked(self, request: WorkerRequest, cancel: threading.Event, timeout: float | None) -> Any:
        """`invoke`, counted in `in_flight` until it returns (on the helper thread, so after we stop waiting)."""
        with self._warned_lock:
            self.in_flight[request.chunk_id] = self.in_flight.get(request.chunk_id, 0) + 1
        try:
            return self.invoke(request, cancel=cancel, timeout=timeout)
        finally:
            with self._warned_lock:
                left = self.in_flight.get(request.chunk_id, 1) - 1
                if left > 0:
                    self.in_flight[request.chunk_id] = left
                else:
                    self.in_flight.pop(request.chunk_id, None)

    def warn_in_flight(self) -> None:
        """Say which chunks still run remotely when the client stops (a cancel, a timeout): they stop at the
        job's cancel marker (cancel) or finish and commit idempotently (timeout)."""
        with self._warned_lock:
            running = sorted(self.in_flight)
        if running:
            ids = ", ".join(map(str, running[:20])) + (", ..." if len(running) > 20 else "")
            logging.getLogger(f"helios.{self.name}").warning(
                "warning: %s: %d chunk%s still running on %s when the client stopped (chunks %s); a cancelled "
                "job's workers stop at its cancel marker within seconds",
                self.name,
                len(running),
                "s" if len(running) != 1 else "",
                self.target,
                ids,
            )

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
