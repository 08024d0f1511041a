"""Leases and the artifact store on Google Cloud Storage, through gcsfs against the loopback fake
(tests/fakes/gcs.py, which answers 412 to a failed `ifGenerationMatch` as GCS does).

* the fake itself: a create-only upload of an existing object is refused, so the lease tests can fail;
* two holders racing for the same chunk (threads released together by a barrier, many trials): exactly
  one wins each generation; renew by the holder only; an expired lease is taken over by the next
  generation; release (done: nothing left; failed: the next taker gets it at once);
* two `helios job run` processes on one job with a gs:// store split its chunks, none rendered twice,
  output frame-exact (renders are the counting fake, real ffmpeg);
* the store's commit, manifest, sweep of interrupted commits and `helios store gc` on gs://.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.cloudjobs import HTML, make_spec, runner_env
from fakes.gcs import FakeGcs, gcs_server
from fakes.renders import decode_frame_indexes

from helios_kit.leases import Lease, LeaseHolder, LeaseStore
from helios_kit.spec import dumps
from helios_kit.store import ArtifactStore


@pytest.fixture
def gcs() -> FakeGcs:
    with gcs_server("renders") as fake:
        yield fake


def leases(run_id: str, root: str = "gs://renders/leases", ttl: float = 30) -> LeaseStore:
    return LeaseStore(ArtifactStore(root), LeaseHolder(run_id=run_id), ttl=ttl)


def test_the_fake_refuses_a_create_only_upload_of_an_existing_object(gcs: FakeGcs) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem()
    fs.pipe_file("renders/x", b"one")
    with fs.open("renders/y", "xb") as handle:
        handle.write(b"created")
    with pytest.raises(FileExistsError), fs.open("renders/x", "xb") as handle:
        handle.write(b"two")
    assert fs.cat_file("renders/x") == b"one" and fs.cat_file("renders/y") == b"created"


def test_gcs_create_is_conditional(gcs: FakeGcs) -> None:
    one = leases("one")
    path = one._path("chunks/c.mp4", 0)
    assert one._create(path, b'{"holder": "one"}')
    assert not one._create(path, b'{"holder": "two"}')  # the 412 is a loss, not an error
    assert gcs.requests["POST /upload/storage/v1"] == 2  # both went to the server; the second got a 412
    # a retried upload of our own that had gone through also gets a 412: the bytes are ours, so it won
    assert one._create(path, b'{"holder": "one"}')
    assert ArtifactStore("gs://renders").fs.cat_file(path) == b'{"holder": "one"}'


def test_racing_holders_exactly_one_wins_each_generation(gcs: FakeGcs) -> None:
    trials, takers = 12, 4
    for trial in range(trials):
        rel = f"chunks/race-{trial}.mp4"
        stores = [leases(f"r{trial}-{n}") for n in range(takers)]
        barrier = threading.Barrier(takers)
        won: list[Lease | None] = [None] * takers

        def take(n: int, stores: list[LeaseStore] = stores, rel: str = rel, won: list = won, barrier=barrier) -> None:
            barrier.wait()
            won[n] = stores[n].acquire(rel)

        threads = [threading.Thread(target=take, args=(n,)) for n in range(takers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [lease for lease in won if lease is not None]
        assert len(winners) == 1, (trial, won)
        current = stores[0].current(rel)
        assert current is not None and current.holder == winners[0].holder and current.generation == 0
    assert gcs.preconditions["failed"] > 0, "no race reached the server: the test proved nothing"


def test_renew_expiry_takeover_and_release(gcs: FakeGcs) -> None:
    one, two = leases("one"), leases("two")
    rel = "chunks/c.mp4"
    first = one.acquire(rel)
    assert first is not None and first.generation == 0
    assert two.acquire(rel) is None
    before = first.expires_at
    assert one.renew(first) and first.expires_at >= before
    assert one.current(rel).expires_at == first.expires_at  # the renewal reached the store
    # the holder stops renewing: its lease expires, and the next generation goes to whoever asks
    expired = first.model_copy(update={"expires_at": datetime(2000, 1, 1, tzinfo=UTC)})
    one.store.fs.pipe_file(one._path(rel, 0), expired.model_dump_json(by_alias=True).encode())
    taken = two.acquire(rel)
    assert taken is not None and taken.generation == 1 and taken.holder.run_id == "two"
    assert not one.renew(first), "a holder that lost its lease must not renew it"
    assert one.acquire(rel) is None
    # a failed attempt gives the lease back at once: the next taker gets the generation after it
    two.release(taken, done=False)
    again = one.acquire(rel)
    assert again is not None and again.generation == 3 and again.holder.run_id == "one"
    one.release(again, done=True)  # committed: every generation up to ours goes
    one.flush()  # on object stores a committed chunk's lease deletes are batched until the flush
    assert one.generations(rel) == [] and not [name for name in gcs.names("renders") if ".lease-" in name]


def upload_job(spec, prefix: str) -> str:
    import fsspec

    fs = fsspec.filesystem("gcs")
    base = prefix.removeprefix("gs://")
    fs.pipe_file(f"{base}/index.html", HTML.encode())
    fs.pipe_file(f"{base}/job.json", dumps(spec).encode())
    return f"{prefix}/job.json"


def test_two_runners_share_a_gcs_store(gcs: FakeGcs, tmp_path: Path) -> None:
    spec = make_spec(frames=32, chunks=8, job_id="coop-gcs")
    url = upload_job(spec, "gs://renders/jobs/coop")
    store = "gs://renders/out/coop"
    # a render waits until both runners render one
    env = runner_env(tmp_path, HELIOS_WORKSPACE=str(tmp_path / "workspace"), HELIOS_FAKE_RENDER_GATE="2")
    argv = [sys.executable, "-m", "helios_kit.cli", "job", "run", url, "--store", store, "--quiet", "-j", "2"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out + err
    log = tmp_path / "renders.log"
    lines = [line.split() for line in log.read_text().splitlines() if line.strip()]
    per_chunk = Counter(int(line[2]) for line in lines)
    assert sorted(per_chunk) == [chunk.start_frame for chunk in spec.chunks]
    assert set(per_chunk.values()) == {1}, f"a chunk rendered twice: {per_chunk}"
    assert {int(line[0]) for line in lines} == {proc.pid for proc in procs}, "one runner did everything"
    local = ArtifactStore(store).fetch(spec.merge.output_file, tmp_path / "merged.mp4")
    assert decode_frame_indexes(local, spec.config.width, spec.config.height) == list(range(32))
    assert not [name for name in gcs.names("renders") if ".lease-" in name]
    assert gcs.preconditions["met"] >= 8, gcs.preconditions  # every chunk's lease was a conditional create
    # a re-run finds every chunk and the output done from the manifests on gs:// and renders nothing
    alone = {key: value for key, value in env.items() if key != "HELIOS_FAKE_RENDER_GATE"}
    again = subprocess.run(argv, env=alone, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(log.read_text().splitlines()) == len(lines)


def test_store_commit_manifest_and_gc_on_gcs(gcs: FakeGcs, tmp_path: Path) -> None:
    store = ArtifactStore("gs://renders/store")
    source = tmp_path / "chunk.mp4"
    source.write_bytes(b"video bytes" * 1000)
    store.commit(source, "chunks/c0.mp4", digest="d1", job_id="j", frame_count=4)
    assert store.exists("chunks/c0.mp4")
    manifest = store.read_manifest("chunks/c0.mp4")
    assert manifest is not None and store.is_complete("chunks/c0.mp4", "d1")
    assert not store.is_complete("chunks/c0.mp4", "other")
    assert store.fetch("chunks/c0.mp4", tmp_path / "back.mp4").read_bytes() == source.read_bytes()
    # a chunk bigger than gcsfs' one-shot upload limit (5 MiB) goes up as a resumable upload
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(6 << 20))
    store.commit(big, "chunks/big.mp4", digest="d2", job_id="j", frame_count=4)
    assert gcs.requests["upload resumable"] >= 2, gcs.requests  # a resumable session and its data
    assert store.fetch("chunks/big.mp4", tmp_path / "big-back.mp4").read_bytes() == big.read_bytes()
    assert store.is_complete("chunks/big.mp4", "d2")
    # an interrupted commit left a temporary object behind: `helios store gc` removes it
    gcs.put("renders", f"store/chunks/c1.mp4.tmp-{'ab' * 16}", b"partial", {}, "video/mp4")
    env = {**os.environ, "HELIOS_HOME": str(tmp_path / "home")}
    gc = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "store", "gc", "gs://renders/store", "--older-than", "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert gc.returncode == 0, gc.stdout + gc.stderr
    names = gcs.names("renders")
    assert not [name for name in names if ".tmp-" in name], names
    assert "store/chunks/c0.mp4" in names


def test_both_gcsfs_classes_take_the_conditional_path() -> None:
    """gcsfs exports `ExtendedGcsFileSystem` by default since 2026: leases must not treat it as a store
    without conditional writes (check-then-write is not safe across hosts)."""
    import s3fs
    from gcsfs.core import GCSFileSystem
    from gcsfs.extended_gcsfs import ExtendedGcsFileSystem

    from helios_kit.leases import _is_gcs

    assert _is_gcs(GCSFileSystem) and _is_gcs(ExtendedGcsFileSystem)
    assert not _is_gcs(s3fs.S3FileSystem)


def test_lease_lookups_list_only_the_chunks_prefix(gcs: FakeGcs) -> None:
    """Finding a chunk's lease generations asks GCS for the objects under the lease's prefix, not for the
    whole folder of outputs, manifests and other chunks' leases."""
    one = leases("one")
    for n in range(40):  # a big job's folder
        gcs.put("renders", f"leases/chunks/c{n:03d}.mp4", b"x", {}, "video/mp4")
    lease = one.acquire("chunks/c007.mp4")
    assert lease is not None
    gcs.requests.clear()
    listed: list[str] = []
    real = FakeGcs.listing

    def spy(self, bucket: str, prefix: str, delimiter: str) -> dict:
        listed.append(prefix)
        return real(self, bucket, prefix, delimiter)

    FakeGcs.listing = spy  # type: ignore[method-assign]
    try:
        assert one.generations("chunks/c007.mp4") == [0]
    finally:
        FakeGcs.listing = real  # type: ignore[method-assign]
    assert listed == ["leases/chunks/c007.mp4.lease-"], listed
    assert sum(gcs.requests.values()) == 1, gcs.requests


def test_a_holder_whose_folder_listing_is_cached_still_sees_it_lost_the_lease(gcs: FakeGcs) -> None:
    """The taker is another process (its own gcsfs client); the holder's client has the chunk folder's
    listing cached from an earlier look (the store's snapshot lists folders). Renewing must ask GCS, not
    the cache, or the holder renders on next to the new holder."""
    import gcsfs

    holder = leases("one", ttl=30)
    rel = "chunks/c.mp4"
    lease = holder.acquire(rel)
    assert lease is not None
    holder.store.fs.ls("renders/leases/chunks")  # cached listing: one lease generation
    other = gcsfs.GCSFileSystem(skip_instance_cache=True)
    taker = LeaseStore(ArtifactStore("gs://renders/leases"), LeaseHolder(run_id="two"), ttl=30)
    taker.store.fs = other
    expired = lease.model_copy(update={"expires_at": datetime(2000, 1, 1, tzinfo=UTC)})
    other.pipe_file(holder._path(rel, 0), expired.model_dump_json(by_alias=True).encode())
    assert taker.acquire(rel) is not None
    assert not holder.renew(lease), "the holder did not notice it lost its lease"
