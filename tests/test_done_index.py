"""The done index (helios_kit/done_index.py) on S3 (moto behind a request counter, 127.0.0.1): a re-run's
snapshot reads one index object instead of one manifest per chunk, and the index never decides anything the
store's manifests contradict: a stale, partial, forged, foreign or corrupt index only costs GETs of the
manifests it cannot vouch for. The property test compares the snapshot's answers with a store read without
one, after random changes made behind the index's back."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.aws import CountingS3, aws_env_exported, make_bucket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_kit.done_index import DoneIndex, decode, encode, index_rel, listed_md5, md5_of, vouched
from helios_kit.store import ArtifactStore

logging.getLogger("werkzeug").setLevel(logging.ERROR)
JOB = "job-1"
RELS = [f"chunks/chunk-{i:04d}.mp4" for i in range(6)]


@pytest.fixture(scope="module")
def s3() -> Iterator[CountingS3]:
    counting = CountingS3()
    try:
        with aws_env_exported(counting.endpoint):
            make_bucket(counting.endpoint, "index-tests")
            yield counting
    finally:
        counting.close()


@pytest.fixture
def url(s3: CountingS3) -> str:
    return f"s3://index-tests/{uuid.uuid4().hex}"


def commit(store: ArtifactStore, tmp_path: Path, rel: str, digest: str = "d1", data: bytes = b"video") -> None:
    source = tmp_path / f"{uuid.uuid4().hex}.bin"
    source.write_bytes(data)
    store.commit(source, rel, digest=digest, job_id=JOB, frame_count=1)


def finished(url: str, tmp_path: Path) -> ArtifactStore:
    """Every chunk committed and the done index written (as at the end of a run)."""
    store = ArtifactStore(url)
    for rel in RELS:
        commit(store, tmp_path, rel)
    assert store.save_index(JOB, RELS)
    return store


def rerun(url: str, s3: CountingS3) -> ArtifactStore:
    """A new run's store with its snapshot taken (requests counted from here)."""
    s3.clear()
    store = ArtifactStore(url)
    store.preload(RELS, JOB)
    return store


def test_a_rerun_reads_the_index_not_the_manifests(url: str, s3: CountingS3, tmp_path: Path) -> None:
    finished(url, tmp_path)
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS)
    kinds = s3.by_kind()
    assert kinds == {"GET done-index": 1, "LIST": 1}, kinds  # one listing of the folder, one GET of the index
    assert not store.save_index(JOB, RELS)  # nothing new learned: nothing written


def test_a_changed_manifest_outvotes_the_index(url: str, s3: CountingS3, tmp_path: Path) -> None:
    finished(url, tmp_path)
    commit(ArtifactStore(url), tmp_path, RELS[2], digest="d2")  # re-rendered with other settings, index not told
    store = rerun(url, s3)
    assert not store.is_complete(RELS[2], "d1") and store.is_complete(RELS[2], "d2")
    assert all(store.is_complete(rel, "d1") for rel in RELS if rel != RELS[2])
    assert s3.by_kind().get("GET manifest") == 1  # only the manifest the index could not vouch for
    assert store.save_index(JOB, RELS)  # the next run finds it in the index
    assert rerun(url, s3).is_complete(RELS[2], "d2") and "GET manifest" not in s3.by_kind()


def test_a_missing_chunk_never_counts_as_done(url: str, s3: CountingS3, tmp_path: Path) -> None:
    finished(url, tmp_path)
    other = ArtifactStore(url)
    other.delete(RELS[1])  # manifest and output gone
    other.fs.rm(other.path(RELS[4]))  # output gone, manifest left
    store = rerun(url, s3)
    assert not store.is_complete(RELS[1], "d1") and not store.is_complete(RELS[4], "d1")
    assert store.is_complete(RELS[0], "d1")


def test_a_forged_or_foreign_index_is_not_trusted(url: str, s3: CountingS3, tmp_path: Path) -> None:
    writer = finished(url, tmp_path)
    index = decode(writer.fs.cat_file(writer.path(index_rel(JOB))))
    assert index is not None
    manifest_rel = writer.manifest_name(RELS[3])
    forged = index.manifests[manifest_rel].replace('"digest": "d1"', '"digest": "d9"')
    index.manifests[manifest_rel] = forged
    writer.write_bytes(index_rel(JOB), encode(index))
    store = rerun(url, s3)
    assert store.is_complete(RELS[3], "d1") and not store.is_complete(RELS[3], "d9")  # the store's own manifest
    assert s3.by_kind().get("GET manifest") == 1

    writer.write_bytes(index_rel(JOB), encode(DoneIndex(job_id="another-job", manifests=index.manifests)))
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS)
    assert s3.by_kind().get("GET manifest") == len(RELS)  # another job's index is ignored

    writer.write_bytes(index_rel(JOB), b"not gzip at all")
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS) and s3.by_kind().get("GET manifest") == len(RELS)


def test_a_partial_index_is_completed_by_the_next_run(url: str, s3: CountingS3, tmp_path: Path) -> None:
    writer = ArtifactStore(url)
    for rel in RELS:
        commit(writer, tmp_path, rel)
    assert writer.save_index(JOB, RELS[:2])  # a run that knew only two chunks (another runner did the rest)
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS)
    assert s3.by_kind().get("GET manifest") == len(RELS) - 2
    assert store.save_index(JOB, RELS)
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS) and "GET manifest" not in s3.by_kind()


def test_concurrent_writers_merge_their_entries(url: str, s3: CountingS3, tmp_path: Path) -> None:
    first, second = ArtifactStore(url), ArtifactStore(url)
    first.preload(RELS, JOB)
    second.preload(RELS, JOB)
    for rel in RELS[:3]:
        commit(first, tmp_path, rel)
    for rel in RELS[3:]:
        commit(second, tmp_path, rel)
    assert first.save_index(JOB, RELS) and second.save_index(JOB, RELS)  # the second reads the first's first
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS) and "GET manifest" not in s3.by_kind()


def test_reported_manifests_are_vouched_for_only_when_they_match(url: str, s3: CountingS3, tmp_path: Path) -> None:
    worker = ArtifactStore(url)
    for rel in RELS:
        commit(worker, tmp_path, rel)
    client = ArtifactStore(url)  # learns the manifests from the workers' results, as `helios job run` does
    for rel in RELS:
        text = worker.fs.cat_file(worker.path(worker.manifest_name(rel))).decode()
        client.remember_manifest(rel, text if rel != RELS[5] else text.replace("d1", "d7"))  # one lies
    assert client.save_index(JOB, RELS)
    store = rerun(url, s3)
    assert all(store.is_complete(rel, "d1") for rel in RELS)
    assert s3.by_kind().get("GET manifest") == 1


def test_listed_md5() -> None:
    data = b'{"version": 2}'
    assert listed_md5({"ETag": f'"{md5_of(data)}"'}) == md5_of(data)
    assert listed_md5({"ETag": '"0123456789abcdef0123456789abcdef-2"'}) is None  # multipart: not an MD5
    assert listed_md5({"size": 3}) is None  # a store that does not say
    assert listed_md5({"md5Hash": base64.b64encode(bytes.fromhex(md5_of(data))).decode()}) == md5_of(data)
    assert vouched(data.decode(), md5_of(data)) == data
    assert vouched(data.decode(), md5_of(b"other")) is None and vouched(None, md5_of(data)) is None
    assert decode(encode(DoneIndex(job_id="j", manifests={"a": "b"}))) == DoneIndex(job_id="j", manifests={"a": "b"})


CHANGE = st.sampled_from(["keep", "redigest", "rewrite-output", "delete", "drop-output", "drop-manifest"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(CHANGE, min_size=len(RELS), max_size=len(RELS)), indexed=st.integers(0, len(RELS)))
def test_the_snapshot_agrees_with_the_store(s3: CountingS3, tmp_path: Path, changes: list[str], indexed: int) -> None:
    """Whatever happened behind an index (of all chunks or some), a run's snapshot answers as the store does."""
    url = f"s3://index-tests/{uuid.uuid4().hex}"
    writer = ArtifactStore(url)
    for rel in RELS:
        commit(writer, tmp_path, rel)
    writer.save_index(JOB, RELS[:indexed])
    other = ArtifactStore(url)
    for rel, change in zip(RELS, changes, strict=True):
        if change == "redigest":
            commit(other, tmp_path, rel, digest="d2")
        elif change == "rewrite-output":
            commit(other, tmp_path, rel, data=b"longer video")
        elif change == "delete":
            other.delete(rel)
        elif change == "drop-output":
            other.fs.rm(other.path(rel))
        elif change == "drop-manifest":
            other.fs.rm(other.path(other.manifest_name(rel)))
    snapshot = ArtifactStore(url)
    snapshot.preload(RELS, JOB)
    for rel in RELS:
        for digest in ("d1", "d2"):
            truth = ArtifactStore(url).is_complete(rel, digest)  # no snapshot: reads the manifest itself
            assert snapshot.is_complete(rel, digest) == truth, (rel, digest, changes, indexed)


def test_gcs_listings_vouch_with_their_md5(tmp_path: Path) -> None:
    """On GCS (gcsfs against the loopback fake) the listing's md5Hash vouches for the index as S3's ETag does."""
    from fakes.gcs import gcs_server

    with gcs_server("renders") as gcs:
        url = "gs://renders/out"
        writer = ArtifactStore(url)
        for rel in RELS:
            commit(writer, tmp_path, rel)
        commit(ArtifactStore(url), tmp_path, RELS[0], digest="d2")  # behind the index's back
        writer.save_index(JOB, RELS)  # (written with the first manifest of RELS[0])
        gcs.requests.clear()
        store = ArtifactStore(url)
        store.preload(RELS, JOB)
        downloads = sum(count for key, count in gcs.requests.items() if key.startswith("GET /download"))
        assert store.is_complete(RELS[0], "d2") and not store.is_complete(RELS[0], "d1")
        assert all(store.is_complete(rel, "d1") for rel in RELS[1:])
        assert downloads == 2, gcs.requests  # the index, and the one manifest it could not vouch for
