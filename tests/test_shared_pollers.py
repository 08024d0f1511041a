"""One thread for all chunks in flight: the heartbeat poller and the lease renewer (issue 14 item 5, the
client's CPU per chunk in a fan-out). Event-driven: the waits are bounded only so a broken poller fails."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from helios_kit import heartbeat
from helios_kit.heartbeat import HeartbeatPoller, StoreHeartbeat
from helios_kit.leases import Lease, LeaseHolder, LeaseKeeper, LeaseStore
from helios_kit.store import ArtifactStore

GUARD_S = 60  # a broken poller fails the test instead of hanging it; never a speed bound


def _threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_one_poller_thread_reads_every_watched_heartbeat(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    rels = [f"chunks/chunk-{index}.mp4" for index in range(3)]
    seen: dict[str, list[int]] = {rel: [] for rel in rels}
    arrived = threading.Condition()

    def reporter(rel: str) -> Callable[[int], None]:
        def on_frames(frames: int) -> None:
            with arrived:
                seen[rel].append(frames)
                arrived.notify_all()

        return on_frames

    poller = HeartbeatPoller(interval=0.01, reads_per_s=1000)
    before = set(_threads("helios-heartbeats"))  # other tests' pollers, ending
    stops = [poller.watch(str(tmp_path), rel, reporter(rel)) for rel in rels]
    beats = [StoreHeartbeat(store, rel, index, interval=0) for index, rel in enumerate(rels)]
    for beat in beats:
        beat(1, 4)
    with arrived:
        assert arrived.wait_for(lambda: all(seen[rel] == [1] for rel in rels), timeout=GUARD_S), seen
    assert len(set(_threads("helios-heartbeats")) - before) == 1
    beats[2](3, 4)
    with arrived:
        assert arrived.wait_for(lambda: seen[rels[2]] == [1, 3], timeout=GUARD_S), seen
    (thread,) = set(_threads("helios-heartbeats")) - before
    for stop in stops:
        stop()
    thread.join(GUARD_S)
    assert not thread.is_alive()  # no chunk left: the thread ends
    assert seen[rels[0]] == [1] and seen[rels[1]] == [1]  # an unchanged heartbeat is not reported again


class CountingLeases(LeaseStore):
    """A LeaseStore that counts renewals per chunk and says when one happened."""

    def __init__(self, store: ArtifactStore, ttl: float) -> None:
        super().__init__(store, LeaseHolder(run_id="counting"), ttl=ttl)
        self.renewals: dict[str, int] = {}
        self.changed = threading.Condition()

    def renew(self, lease: Lease) -> bool:
        kept = super().renew(lease)
        with self.changed:
            self.renewals[lease.output] = self.renewals.get(lease.output, 0) + 1
            self.changed.notify_all()
        return kept


def test_one_renewer_thread_renews_every_lease_and_notices_a_takeover(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    leases = CountingLeases(store, ttl=0.3)  # renewed every 0.1 s
    rels = [f"chunks/chunk-{index}.mp4" for index in range(4)]
    before = set(_threads("helios-leases"))  # other tests' renewers, ending
    taken = [leases.acquire(rel) for rel in rels]
    assert all(lease is not None for lease in taken)
    keepers = [LeaseKeeper(leases, lease) for lease in taken if lease is not None]
    for keeper in keepers:
        keeper.__enter__()
    with leases.changed:
        assert leases.changed.wait_for(lambda: all(leases.renewals.get(r, 0) >= 2 for r in rels), timeout=GUARD_S)
    assert len(set(_threads("helios-leases")) - before) == 1
    assert not any(keeper.lost.is_set() for keeper in keepers)
    # another holder took chunk 3 over (its next generation exists): its keeper finds the lease lost
    other = LeaseStore(store, LeaseHolder(run_id="other"), ttl=30)
    assert other._create(other._path(rels[3], 1), b"{}")
    assert keepers[3].lost.wait(GUARD_S)
    renewer = leases.renewer
    thread = renewer._thread
    assert thread is not None
    for keeper in keepers:
        keeper.__exit__(None, None, None)
    thread.join(GUARD_S)
    assert not thread.is_alive()  # no lease left: the thread ends
    after = dict(leases.renewals)
    for lease in taken[:3]:
        assert lease is not None
        leases.release(lease, done=True)
    assert leases.renewals == after  # no renewal after a keeper's exit
    assert leases.renewer is renewer  # one renewer per LeaseStore


def test_poller_lists_the_folder_and_reads_only_new_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks in flight that wrote no heartbeat cost listings, not a GET each; a written one is read once."""
    url = f"memory://heartbeats-{uuid.uuid4().hex}"
    store = ArtifactStore(url)
    rels = [f"chunks/chunk-{index}.mp4" for index in range(3)]
    store.fs.pipe_file(store.path("chunks/other.mp4"), b"not a heartbeat")
    reads: list[str] = []
    listed = threading.Condition()
    listings = [0]
    original_ls = type(store.fs).ls

    def counting_ls(fs: object, path: str, *args: object, **kwargs: object) -> object:
        with listed:
            listings[0] += 1
            listed.notify_all()
        return original_ls(fs, path, *args, **kwargs)

    real_read = heartbeat.read_heartbeat

    def counting_read(store: ArtifactStore, rel: str) -> object:
        reads.append(rel)
        return real_read(store, rel)

    monkeypatch.setattr(type(store.fs), "ls", counting_ls)
    monkeypatch.setattr(heartbeat, "read_heartbeat", counting_read)
    seen: list[int] = []
    arrived = threading.Condition()

    def on_frames(frames: int) -> None:
        with arrived:
            seen.append(frames)
            arrived.notify_all()

    poller = HeartbeatPoller(interval=0.01, reads_per_s=1000)
    poller._stores[url] = store  # the memory filesystem is one per process anyway
    with poller._wake:  # all three in flight before the first read: a lone chunk is read without a listing
        stops = [poller.watch(url, rel, on_frames if index == 1 else lambda _: None) for index, rel in enumerate(rels)]
    with listed:
        assert listed.wait_for(lambda: listings[0] >= 3, timeout=GUARD_S)
    assert reads == []  # nothing written yet: no GET at all
    StoreHeartbeat(store, rels[1], 1, interval=0)(2, 4)
    with arrived:
        assert arrived.wait_for(lambda: seen == [2], timeout=GUARD_S)
    with listed:
        now = listings[0]
        assert listed.wait_for(lambda: listings[0] >= now + 2, timeout=GUARD_S)
    for stop in stops:
        stop()
    assert reads == [rels[1]]  # read once, when the listing showed it new
