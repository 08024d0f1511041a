"""A minimal stand-in for the executor (issue 5) to drive a backend over every chunk of a job in tests.

Threads bounded by `concurrency`, retries of retryable results with a short backoff, a cancel event, and
the results per chunk. The real executor adds progress, the DAG and the merge; the backends' contract
(`run_chunk` → WorkerResult with `retryable`) is the same.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from helios_kit.backends.base import Backend, ChunkContext, WorkerResult
from helios_kit.spec import Chunk, JobSpec


@dataclass
class DriveReport:
    results: dict[int, WorkerResult] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> list[int]:
        return sorted(cid for cid, result in self.results.items() if not result.ok)


def drive(
    backend: Backend,
    spec: JobSpec,
    context: ChunkContext,
    *,
    concurrency: int = 8,
    retries: int = 5,
    backoff: float = 0.05,
    cancel: threading.Event | None = None,
    chunks: list[Chunk] | None = None,
) -> DriveReport:
    cancel = cancel or threading.Event()
    report = DriveReport()
    lock = threading.Lock()

    def one(chunk: Chunk) -> None:
        attempt = 0
        while True:
            attempt += 1
            result = backend.run_chunk(spec, chunk, context, cancel=cancel)
            if result.ok or not result.retryable or attempt > retries or cancel.is_set():
                break
            cancel.wait(backoff * attempt)
        with lock:
            report.results[chunk.id] = result
            report.attempts[chunk.id] = attempt

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, chunks if chunks is not None else spec.chunks))
    report.elapsed_s = time.monotonic() - started
    return report
