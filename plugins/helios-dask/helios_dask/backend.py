"""The `dask` backend: each attempt at a chunk is one task on a Dask cluster.

``helios job run job.json --backend dask --scheduler tcp://host:8786`` sends every chunk to the workers of a
scheduler you run; without ``--scheduler`` a ``LocalCluster`` on 127.0.0.1 (one single-threaded worker
process per core, started at the first chunk) runs them and is closed with the backend.

A task is :func:`helios_dask.task.render_chunk`: the worker runtime renders the chunk and commits it to the
store, and the WorkerResult comes back as a dict. Dask only places and runs tasks; retries, cancellation,
timeouts and progress stay with helios's executor:

* every attempt is submitted with ``pure=False`` under its own key (``helios-<job>-chunk-<id>-<random>``),
  so a retry is never answered from an earlier attempt's result;
* a cancel or the chunk timeout cancels the future and sets a named :class:`distributed.Event` the task
  watches, so the render stops between frames (Dask cannot stop a running thread itself);
* a task whose worker died is run again by Dask on another worker (up to the scheduler's
  ``allowed-failures``); ``KilledWorker``, a future cancelled under us (a lost scheduler connection) and
  connection errors come back as failed, retryable results with one line;
* ``--resources chromium=1`` makes each task need that resource, so renders only go to workers started
  with ``dask worker ... --resources chromium=1`` (the ones with Chromium and ffmpeg).

Payload, cancel/timeout bookkeeping and reading the answer are :class:`RemoteBackend`'s. distributed is
imported only when a backend is built, so `helios --help` and other backends do not pay for it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from helios_kit.backends.base import BackendOptions, ChunkContext
from helios_kit.backends.remote import Interrupted, RemoteBackend, RemoteFailure
from helios_kit.errors import HeliosError, describe
from helios_kit.protocol import WorkerRequest
from helios_kit.spec import Chunk, JobSpec

log = logging.getLogger("helios.dask")

#: Seconds between checks of the cancel event and the deadline while a task runs.
POLL_S = 0.05


class DaskConnectError(HeliosError):
    """The scheduler given with --scheduler cannot be reached (one line naming its address)."""

    exit_code = 1
    retryable = True


def parse_resources(text: str) -> dict[str, float]:
    """`chromium=1,gpu=0.5` (or `dask worker`'s `"chromium=1 gpu=0.5"`) → `{"chromium": 1.0, "gpu": 0.5}`;
    ValueError naming the bad part."""
    needs: dict[str, float] = {}
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        name, equals, amount = part.partition("=")
        try:
            value = float(amount) if equals else math.nan
        except ValueError:
            value = math.nan
        if not name.strip() or not value > 0 or math.isinf(value):
            raise ValueError(f"{part!r} is not NAME=AMOUNT with AMOUNT > 0 (e.g. chromium=1)")
        needs[name.strip()] = value
    if not needs:
        raise ValueError("no resources given (e.g. chromium=1)")
    return needs


class DaskOptions(BackendOptions):
    scheduler: str | None = Field(
        None, description="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster here)."
    )
    resources: str | None = Field(
        None,
        description="Dask resources each chunk needs, e.g. chromium=1 (start workers with --resources chromium=1).",
    )
    workers: int | None = Field(None, ge=1, description="Worker processes of the local cluster (default: CPU count).")
    threads: int | None = Field(None, ge=1, description="Threads per worker of the local cluster (default 1).")
    worker_workspace: str | None = Field(None, description="Folder on each Dask worker for render temp files.")
    scheduler_timeout: float = Field(
        10.0, gt=0, description="Seconds to reach the Dask scheduler, and to reconnect when it is lost."
    )
    max_worker_failures: int = Field(
        3, ge=1, description="Failed chunks after which a Dask worker gets no more chunks of this job."
    )

    @field_validator("resources")
    @classmethod
    def _resources_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_resources(value)
        return value

    @model_validator(mode="after")
    def _local_sizes_only_without_scheduler(self) -> DaskOptions:
        if self.scheduler and (self.workers is not None or self.threads is not None):
            raise ValueError("--workers and --threads size the local cluster; with --scheduler, size `dask worker`")
        return self

    def resource_needs(self) -> dict[str, float]:
        return parse_resources(self.resources) if self.resources else {}


class DaskBackend(RemoteBackend):
    """Runs chunks as tasks on a Dask cluster (a scheduler you run, or a LocalCluster on this machine)."""

    name = "dask"
    Options = DaskOptions

    def __init__(self, options: DaskOptions | None = None) -> None:
        super().__init__(options)
        self.options: DaskOptions
        self.needs = self.options.resource_needs()
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._closed = False
        self.failures: dict[str, int] = {}  # worker address → failed chunks in this job
        self.blocked: set[str] = set()
        self.seen: set[str] = set()  # every worker address listed by the scheduler or named by an answer
        if self.options.scheduler:
            self.target = f"Dask scheduler {self.options.scheduler}"
            self._client = self._connect(self.options.scheduler)
            self._workers_all_local = self._check_workers()
        else:
            self.target = "the local Dask cluster"
            self._workers_all_local = True

    # -- the cluster ---------------------------------------------------------------------------------------
    def _connect(self, address: str) -> Any:
        """A client of the scheduler at `address`; DaskConnectError (one line) when it does not answer."""
        from distributed import Client

        _quiet_distributed_logs()
        try:
            return Client(address, timeout=self.options.scheduler_timeout, set_as_default=False)
        except Exception as error:  # OSError, TimeoutError, a malformed address: one line naming the address
            raise DaskConnectError(f"dask: cannot reach the scheduler at {address}: {describe(error)}") from None

    def _local_size(self) -> tuple[int, int]:
        return self.options.workers or os.cpu_count() or 1, self.options.threads or 1

    @property
    def client(self) -> Any:
        """The Dask client; without --scheduler, the local cluster is started on first use (never after
        close: an attempt still winding down in a helper thread must not start a new cluster)."""
        with self._lock:
            if self._closed:
                raise RemoteFailure(f"dask: the backend is closed; {self.target} is no longer used", retryable=False)
            if self._client is None:
                self._client = self._start_local_cluster()
            return self._client

    def _start_local_cluster(self) -> Any:
        from distributed import Client, LocalCluster

        workers, threads = self._local_size()
        resources = {name: amount * threads for name, amount in self.needs.items()}
        log.info("dask: starting a local cluster of %d workers x %d threads", workers, threads)
        _quiet_distributed_logs()
        self._cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # its HTTP endpoints stay on loopback, on a free port
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
            resources=resources or None,
        )
        return Client(self._cluster, set_as_default=False)

    def _workers(self) -> dict[str, dict[str, Any]]:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        with self._lock:
            self.seen.update(workers)
        return workers

    def _slots(self, worker: dict[str, Any]) -> int:
        """How many chunks one worker runs at once: its threads, fewer when its resources say so."""
        slots = int(worker.get("nthreads", 1))
        have = worker.get("resources") or {}
        for name, need in self.needs.items():
            slots = min(slots, int(have.get(name, 0) // need))
        return slots

    def _check_workers(self) -> bool:
        """Warn when no worker can run a chunk yet (none connected, or none with the resources asked for);
        True when every worker connected now runs on this machine (loopback addresses)."""
        workers = self._workers()
        if not workers:
            log.warning(
                "warning: dask: %s has no workers yet; chunks wait until one connects (one at a time unless "
                "--concurrency says more)",
                self.target,
            )
        elif self.needs and not any(self._slots(worker) for worker in workers.values()):
            log.warning(
                "warning: dask: no worker of %s has the resources %s; chunks wait for one started with "
                "`dask worker %s --resources %s`",
                self.target,
                self.options.resources,
                self.options.scheduler,
                self.options.resources,
            )
        return all(_is_loopback(_host(address)) for address in workers)

    def default_concurrency(self) -> int:
        """The cluster's chunk slots: its threads, or what its resources allow (at least 1)."""
        if self.options.scheduler is None:
            workers, threads = self._local_size()
            return workers * threads
        return max(1, sum(self._slots(worker) for worker in self._workers().values()))

    def close(self) -> None:
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            self._closed = True
        for closeable in (client, cluster):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception as error:  # closing must not hide the job's outcome
                    log.debug("dask: closing %r failed: %s", closeable, error)

    # -- one chunk -----------------------------------------------------------------------------------------
    def check_chunk(self, spec: JobSpec, chunk: Chunk, context: ChunkContext) -> None:
        """Warn (once) when a job or store is a local path and workers run on other machines: they must see
        it at the same path (a shared folder), or it must be a URL they can read (s3://)."""
        if self._workers_all_local:
            return
        for what, value in (("job", context.job_url), ("store", context.store_url)):
            if "://" not in value or value.startswith("file://"):
                self.warn_once(
                    f"local:{what}",
                    "warning: dask: the %s %s is a local path; every Dask worker must see it at that path "
                    "(a shared folder), or use an s3:// URL",
                    what,
                    value,
                )

    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> Any:
        """Submit the chunk's task and wait for its answer, cancelling it on `cancel` or past `timeout`."""
        from helios_dask.task import render_chunk

        key = f"helios-chunk-{request.chunk_id}-{uuid.uuid4().hex[:12]}"
        future = self.client.submit(
            render_chunk,
            request.model_dump(mode="json", by_alias=True),
            self.options.worker_workspace,
            f"{key}-cancel",
            key=key,
            pure=False,
            resources=self.needs or None,
            workers=self._allowed_workers(),
            allow_other_workers=False,
        )
        try:
            self._wait(future, cancel, timeout)
        except Interrupted:
            self._stop(future, f"{key}-cancel")
            raise
        answer = future.result()
        self._count_failure(answer)
        return answer

    # -- block-listing workers that keep failing -------------------------------------------------------------
    def _allowed_workers(self) -> list[str] | None:
        """None (any worker) until one is block-listed; then the others. RemoteFailure when none is listed:
        retryable while a worker that has not failed was seen (the scheduler's list missed a live worker for
        a moment in CI under load; why is not known), final once every worker seen is block-listed."""
        with self._lock:
            blocked = set(self.blocked)
        if not blocked:
            return None
        allowed = [address for address in self._workers() if address not in blocked]
        if allowed:
            return allowed
        with self._lock:
            missing = sorted(self.seen - blocked)
        if missing:
            raise RemoteFailure(
                f"dask: no worker of {self.target} but block-listed ones is listed now ({', '.join(missing)} "
                f"not among them); a retry waits for one",
                retryable=True,
            )
        raise RemoteFailure(
            f"dask: every worker of {self.target} failed {self.options.max_worker_failures} chunks of this job "
            f"and is block-listed ({', '.join(sorted(blocked))})",
            retryable=False,
        )

    def _count_failure(self, answer: Any) -> None:
        """Note the worker that answered as seen; count a failed chunk against it (the task names it) and
        block-list it after --max-worker-failures."""
        if not isinstance(answer, dict) or not answer.get("worker"):
            return
        worker = str(answer["worker"])
        with self._lock:
            self.seen.add(worker)
            if answer.get("status") != "failed":
                return
            self.failures[worker] = self.failures.get(worker, 0) + 1
            newly = self.failures[worker] >= self.options.max_worker_failures and worker not in self.blocked
            if newly:
                self.blocked.add(worker)
        if newly:
            log.warning(
                "warning: dask: worker %s failed %d chunks of this job; it gets no more of them",
                worker,
                self.failures[worker],
            )

    def _wait(self, future: Any, cancel: threading.Event, timeout: float | None) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        while not future.done():
            if cancel.wait(POLL_S):
                raise Interrupted("cancelled", cancelled=True)
            if deadline is not None and time.monotonic() >= deadline:
                raise Interrupted(f"no answer within {timeout:g} s", cancelled=False)

    def _stop(self, future: Any, event_name: str) -> None:
        """Tell the running task to stop rendering, and drop the future (a queued task never starts)."""
        from distributed import Event

        try:
            Event(event_name, client=future.client).set()
            future.cancel()
        except Exception as error:  # the scheduler went away: nothing runs there any more
            log.debug("dask: cancelling %s failed: %s", future.key, error)

    def describe_failure(self, error: Exception) -> RemoteFailure:
        """What a Dask error means for the attempt: all of them may pass on another try, except a client
        that gave up on its scheduler and a worker that cannot import helios-dask."""
        from concurrent.futures import CancelledError

        from distributed.client import ClosedClientError
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        if isinstance(error, KilledWorker):
            return RemoteFailure(
                f"dask: every worker that ran the task died (KilledWorker after {error.allowed_failures + 1} "
                f"workers, the last {error.last_worker.address})",
                retryable=True,
            )
        if isinstance(error, ClosedClientError):  # Dask gave up reconnecting: no attempt of this run can pass
            return RemoteFailure(f"dask: lost {self.target} (the client gave up reconnecting)", retryable=False)
        if isinstance(error, CancelledError):
            return RemoteFailure(
                f"dask: the task was cancelled under us (lost connection to {self.target}?): {describe(error)}",
                retryable=True,
            )
        if isinstance(error, (CommClosedError, OSError, TimeoutError)):
            return RemoteFailure(f"dask: lost the connection to {self.target}: {describe(error)}", retryable=True)
        if isinstance(error, ImportError):
            return RemoteFailure(
                f"dask: a worker cannot import helios-dask ({describe(error)}); pip install helios-dask on every "
                "worker",
                retryable=False,
            )
        return RemoteFailure(f"dask: the task raised {describe(error)}", retryable=True)


def _quiet_distributed_logs() -> None:
    """distributed logs every connection at INFO; helios shows them only with -v."""
    if not logging.getLogger("helios").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _host(address: str) -> str:
    return urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
