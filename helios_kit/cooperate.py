"""Cooperative runners: what a run does with a chunk when other runners may share its store.

A run renders a chunk only while it holds the chunk's lease (:mod:`helios_kit.leases`). The run goes over
its chunks twice (see :meth:`helios_kit.run.JobRun.run`):

1. **claim**: each chunk that is not complete is leased and rendered; a chunk whose lease another runner
   holds is *deferred* at once, so this runner moves on to chunks nobody has taken (two runners started
   together split the job instead of queueing behind each other);
2. **wait**: each deferred chunk is watched until it is complete (another runner committed it: skipped
   here) or its lease is free (released after a failure, or expired because its holder died): then this
   runner takes it over and renders it.

While a chunk renders, a :class:`~helios_kit.leases.LeaseKeeper` renews its lease; when it finds the lease
taken over (this runner stalled past its expiry), the attempt is stopped and the chunk waited for instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from helios_kit.leases import Lease, LeaseKeeper, LeaseStore
from helios_kit.protocol import ChunkState
from helios_kit.spec import Chunk

log = logging.getLogger("helios.cooperate")

#: `render(chunk, stop)`: one chunk through the executor, stopped early when `stop` is set; its final state.
RenderFn = Callable[[Chunk, threading.Event], ChunkState]


class CooperativeChunks:
    """Leases around a run's chunk renders; the chunks deferred in the claim pass."""

    def __init__(
        self,
        leases: LeaseStore,
        *,
        is_complete: Callable[[Chunk], bool],
        render: RenderFn,
        mark_skipped: Callable[[Chunk], None],
        cancel: threading.Event,
    ) -> None:
        self.leases = leases
        self.is_complete = is_complete
        self.render_fn = render
        self.mark_skipped = mark_skipped
        self.cancel = cancel
        self.waiting = False  # False: the claim pass (defer held chunks); True: the wait pass
        self.deferred: list[int] = []
        self._lock = threading.Lock()
        self.poll_s = min(1.0, leases.ttl / 4)

    def render(self, chunk: Chunk) -> bool:
        """The doit action of a chunk: True when the chunk is done (here or elsewhere) or deferred."""
        waiting = self.waiting
        while not self.cancel.is_set():
            lease = self.leases.acquire(chunk.output_file)
            if lease is None and not waiting:
                with self._lock:
                    self.deferred.append(chunk.id)
                log.info("chunk %s: leased by another runner; deferred", chunk.id)
                return True
            if lease is None:
                lease = self._wait(chunk)
                if lease is None:
                    return self._done_elsewhere(chunk)
            state = self._render_leased(chunk, lease)
            if state is not None:
                return state.done
            waiting = True  # lost the lease mid-render: wait for the runner that took it over
        return False

    def _render_leased(self, chunk: Chunk, lease: Lease) -> ChunkState | None:
        """Render `chunk` under `lease`; None when the lease was lost on the way."""
        # committed by another runner between our check and our lease? Asked only when we took the lease over
        # (generation > 0); a first lease saves the request: the worker checks the store before it renders
        if lease.generation > 0 and self.is_complete(chunk):
            self.leases.release(lease, done=True)
            self.mark_skipped(chunk)
            return ChunkState.SKIPPED
        with LeaseKeeper(self.leases, lease) as keeper:
            state = self.render_fn(chunk, keeper.lost)
        if keeper.lost.is_set() and not state.done:
            return None
        self.leases.release(lease, done=state.done)
        return state

    def _wait(self, chunk: Chunk) -> Lease | None:
        """Wait until `chunk` is complete (None) or its lease is free (taken: the lease); None on cancel."""
        while not self.cancel.is_set():
            if self.is_complete(chunk):
                return None
            lease = self.leases.acquire(chunk.output_file)
            if lease is not None:
                log.info("chunk %s: took over its lease (generation %d)", chunk.id, lease.generation)
                return lease
            self.cancel.wait(self.poll_s)
        return None

    def _done_elsewhere(self, chunk: Chunk) -> bool:
        if self.cancel.is_set():
            return False
        self.mark_skipped(chunk)
        return True
