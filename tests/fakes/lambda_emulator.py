"""A small AWS Lambda Invoke-API emulator on 127.0.0.1 that runs the real handler in worker processes.

`POST /2015-03-31/functions/{name}/invocations` (RequestResponse) is answered like Lambda does: 200 with the
handler's return value; 200 plus `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` when
the handler raises or times out; 429 `TooManyRequestsException` when throttled; 404
`ResourceNotFoundException` for an unknown function. boto3's real client talks to it via `endpoint_url`.

Knobs (all per emulator): `latency`, the least time an invocation takes (the handler runs meanwhile),
`throttle_rate` and `failure_rate`
(fractions of invocations answered 429 / Unhandled before the handler runs, from a seeded RNG: each chunk
draws from its own sequence, so which of a chunk's invocations fail does not depend on how the client's
concurrent invocations happened to interleave, and a seeded test sees the same outcomes every run),
`reserved_concurrency` (in-flight invocations above it are throttled, as Lambda does), `lost_answers` (chunk
ids whose first invocation commits its chunk and then answers as a dead runtime would), `first_delays`
(`{chunk id: seconds}`: the first invocation of that chunk waits that long before its handler starts, a
straggling instance; later invocations of it run normally), `timeout` (the
function's time limit, reported as `Task timed out`), `workers` (handler processes), `threads` (see below),
and `gather` (the first invocations wait, up to `gather_timeout`, until that many are in flight at once: a
client's fan-out is then checked by an event, not by timing). Counters record what happened, for assertions.

By default each of the `workers` processes runs one invocation at a time (a pool), so at most `workers`
handlers run at once; invocations beyond that wait for a process. With `threads=True` the handlers run in
`workers` handler hosts (:mod:`fakes.lambda_host`), each invocation in its own thread: the emulator holds
as many invocations in flight as the client sends, as Lambda does, which a fan-out measurement needs.
"""

from __future__ import annotations

import http.client
import itertools
import json
import multiprocessing
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from fakes.loopback import LoopbackHTTPServer
from helios_kit.plugins import resolve_reference

_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")


class _Context:
    """The bits of Lambda's context object the handler uses."""

    def __init__(self, timeout: float, request_id: str) -> None:
        self.deadline = time.monotonic() + timeout
        self.aws_request_id = request_id
        self.function_name = "helios-worker"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def call_handler(reference: str, event: dict[str, Any], timeout: float, request_id: str) -> dict[str, Any]:
    """Runs in a worker process (or a handler host's thread): import and call the handler like the Lambda
    runtime would."""
    handler = resolve_reference(reference)
    try:
        return {"ok": True, "value": handler(event, _Context(timeout, request_id))}
    except Exception as error:
        return {"ok": False, "errorType": type(error).__name__, "errorMessage": str(error)}


class _Server(LoopbackHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients connect at once; the default backlog (5) would drop SYNs

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # clients that gave up: expected
            super().handle_error(request, client_address)


def _runtime_died(request: Any) -> None:
    """Answer as Lambda does when the function's runtime was killed (an `Unhandled` function error)."""
    return request._send(
        200,
        {"errorMessage": "Runtime exited with error: signal: killed", "errorType": "Runtime.ExitError"},
        {"X-Amz-Function-Error": "Unhandled"},
    )


@dataclass
class LambdaEmulator:
    handler: str = "helios_lambda.handler:handler"
    function_name: str = "helios-worker"
    latency: float = 0.0
    throttle_rate: float = 0.0
    failure_rate: float = 0.0
    reserved_concurrency: int | None = None
    timeout: float = 900.0
    workers: int = 2
    seed: int = 1
    counts: Counter = field(default_factory=Counter)
    invoked_chunks: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    gather: int = 0
    gather_timeout: float = 60.0
    first_delays: dict[int, float] = field(default_factory=dict)
    #: Chunk ids whose first invocation runs its handler to the end, then answers as if the runtime died: the
    #: chunk is committed, its answer is lost (the client retries).
    lost_answers: set[int] = field(default_factory=set)
    threads: bool = False
    #: Chunk invocations after the first `hold_after` wait, before their handler runs, until :meth:`release`.
    hold_after: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._chunk_rngs: dict[int, random.Random] = {}
        self._released = threading.Event()
        self._lock = threading.Condition()
        self._in_flight = 0
        self._stopped = False
        self._pool = (
            None if self.threads else ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        )
        self._hosts: list[subprocess.Popen[bytes]] = []
        self._host_ports: list[int] = []
        self._next_host = itertools.count()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", f"req-{time.monotonic_ns()}")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                emulator._invoke(self, raw)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LambdaEmulator:
        self._thread.start()
        if self._pool is None:
            self._start_hosts()
        else:  # warm the worker processes (imports) so timing-sensitive tests measure invocations, not start-up
            list(self._pool.map(resolve_reference, [self.handler] * self.workers))
        return self

    def _start_hosts(self) -> None:
        """`workers` handler hosts (fakes/lambda_host.py), each running any number of invocations in threads."""
        host = Path(__file__).with_name("lambda_host.py")
        for _ in range(self.workers):
            argv = [sys.executable, str(host), self.handler]
            self._hosts.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for process in self._hosts:
            line = process.stdout.readline().decode() if process.stdout else ""
            if not line.startswith("port "):
                self.stop()
                raise RuntimeError(f"lambda handler host did not start (said {line!r})")
            self._host_ports.append(int(line.split()[1]))

    def _submit(self, event: Any, request_id: str, started: float) -> Future[dict[str, Any]]:
        """Run the handler on `event`: in the process pool, or (threads) in a handler host's thread."""
        if self._pool is not None:
            return self._pool.submit(call_handler, self.handler, event, self.timeout, request_id)
        future: Future[dict[str, Any]] = Future()
        port = self._host_ports[next(self._next_host) % len(self._host_ports)]
        body = json.dumps({"reference": self.handler, "event": event, "timeout": self.timeout, "requestId": request_id})

        def forward() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout + 60)
            try:
                connection.request("POST", "/invoke", body, {"Content-Type": "application/json"})
                future.set_result(json.loads(connection.getresponse().read()))
            except Exception as error:  # the host went away (stop): the invocation failed
                future.set_result({"ok": False, "errorType": type(error).__name__, "errorMessage": str(error)})
            finally:
                connection.close()

        threading.Thread(target=forward, name="lambda-forward", daemon=True).start()
        return future

    def stop(self) -> None:
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for process in self._hosts:
            if process.stdin:
                process.stdin.close()  # the host exits when its stdin ends
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()
        self._hosts.clear()

    def __enter__(self) -> LambdaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one invocation -----------------------------------------------------------------------------------
    def _invoke(self, request: Any, raw: bytes) -> None:
        match = _PATH.match(request.path.split("?", 1)[0])
        if not match or match.group(1).split(":")[0] != self.function_name:
            self.counts["not_found"] += 1
            name = match.group(1) if match else request.path
            return request._send(
                404,
                {"Type": "User", "Message": f"Function not found: {name}"},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
        if request.headers.get("X-Amz-Invocation-Type", "RequestResponse") != "RequestResponse":
            return request._send(
                400,
                {"Message": "only RequestResponse is emulated"},
                {"x-amzn-ErrorType": "InvalidParameterValueException"},
            )
        try:
            event = json.loads(raw or b"{}")
        except ValueError:
            return request._send(
                400,
                {"Type": "User", "Message": "Could not parse request body into json"},
                {"x-amzn-ErrorType": "InvalidRequestContentException"},
            )
        with self._lock:
            roll = self._roll(event)
            over = self.reserved_concurrency is not None and self._in_flight >= self.reserved_concurrency
            throttled = over or roll < self.throttle_rate
            failing = not throttled and roll < self.throttle_rate + self.failure_rate
            if throttled:
                self.counts["throttled"] += 1
            else:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                self.counts["invoked"] += 1
                if isinstance(event, dict) and event.get("merge"):
                    self.counts["merge"] += 1  # a merge next to the store, not a chunk
                elif isinstance(event, dict) and isinstance(event.get("chunkId"), int):
                    self.invoked_chunks.append(event["chunkId"])
                self._lock.notify_all()
                self._lock.wait_for(lambda: self.max_in_flight >= self.gather, timeout=self.gather_timeout)
        if throttled:
            return request._send(
                429,
                {
                    "Type": "User",
                    "message": "Rate Exceeded.",
                    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                },
                {"x-amzn-ErrorType": "TooManyRequestsException"},
            )
        if self.hold_after is not None and isinstance(event, dict) and not event.get("merge"):
            with self._lock:
                held = len(self.invoked_chunks) > self.hold_after
            if held:
                self._released.wait(self.timeout)
        started = time.monotonic()
        delay = 0.0
        if isinstance(event, dict) and isinstance(event.get("chunkId"), int) and not event.get("merge"):
            with self._lock:
                delay = self.first_delays.pop(event["chunkId"], 0.0)
        try:
            if delay:
                time.sleep(delay)  # a slow instance: the handler starts late, so its commit comes late
                if self._stopped:
                    return None  # the emulator went away meanwhile (its pool too): nobody waits for this one
            if failing:
                time.sleep(self.latency)
                self.counts["failed"] += 1
                return _runtime_died(request)
            future = self._submit(event, f"req-{roll}", started)
            # an invocation lasts `latency` (start-up, network) or the handler's own time, whichever is longer
            time.sleep(max(0.0, self.latency - (time.monotonic() - started)))
            try:
                outcome = future.result(timeout=max(0.0, self.timeout - (time.monotonic() - started)))
            except FutureTimeout:
                self.counts["timed_out"] += 1
                return request._send(
                    200,
                    {
                        "errorMessage": f"Task timed out after {self.timeout:.2f} seconds",
                        "errorType": "Sandbox.Timedout",
                    },
                    {"X-Amz-Function-Error": "Unhandled"},
                )
            if not outcome["ok"]:
                self.counts["unhandled"] += 1
                return request._send(
                    200,
                    {"errorMessage": outcome["errorMessage"], "errorType": outcome["errorType"]},
                    {"X-Amz-Function-Error": "Unhandled"},
                )
            if self._loses_answer(event):
                self.counts["lost"] += 1
                return _runtime_died(request)
            self.counts["ok"] += 1
            return request._send(200, outcome["value"], {"X-Amz-Executed-Version": "$LATEST"})
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _loses_answer(self, event: Any) -> bool:
        """Whether this invocation's answer is lost (the first of a chunk in `lost_answers`)."""
        if not isinstance(event, dict) or event.get("merge") or not isinstance(event.get("chunkId"), int):
            return False
        with self._lock:
            lost = event["chunkId"] in self.lost_answers
            self.lost_answers.discard(event["chunkId"])
        return lost

    def _roll(self, event: Any) -> float:
        """The next draw for this invocation: from its chunk's own seeded sequence (the emulator's for others)."""
        if isinstance(event, dict) and isinstance(event.get("chunkId"), int) and not event.get("merge"):
            chunk = event["chunkId"]
            rng = self._chunk_rngs.setdefault(chunk, random.Random(f"{self.seed}:{chunk}"))
            return rng.random()
        return self._rng.random()

    def release(self) -> None:
        """Let the invocations held by `hold_after` run (and every later one)."""
        self._released.set()

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Wait until no invocation is in flight (their handlers returned and committed); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout=timeout)


def noop_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A handler that does no work: measures the client's and the emulator's own fan-out overhead."""
    return {"chunkId": event.get("chunkId"), "status": "ok", "frames": 1}


_barrier_lock = threading.Lock()
_barrier: threading.Barrier | None = None


def barrier_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """:func:`noop_handler`, once `HELIOS_FAKE_BARRIER` invocations run in this process at the same time (each
    waits for the others, up to 120 s, then raises): a host holding that many invocations is checked by an
    event, not by timing."""
    import os

    global _barrier
    with _barrier_lock:
        if _barrier is None:
            _barrier = threading.Barrier(int(os.environ["HELIOS_FAKE_BARRIER"]))
    _barrier.wait(timeout=120)
    return noop_handler(event, context)
