"""ArtifactStore on a local folder, memory:// and S3 (moto's server on 127.0.0.1): atomic commits, done checks."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fakes.aws import make_bucket, moto_s3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_kit.composition.deps import sha256_file as file_sha256
from helios_kit.errors import StoreError
from helios_kit.store import ArtifactStore

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3() as endpoint:
        make_bucket(endpoint, "store-tests")
        yield endpoint


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "store")
    if request.param == "memory":
        return ArtifactStore(f"memory://helios-tests/{uuid.uuid4().hex}")
    request.getfixturevalue("s3_endpoint")
    return ArtifactStore(f"s3://store-tests/{uuid.uuid4().hex}/")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def listing(store: ArtifactStore) -> list[str]:
    store.refresh()
    root = store.root
    if not store.fs.exists(root):
        return []
    return sorted(p[len(root) + 1 :] if p.startswith(root + "/") else p for p in store.fs.find(root))


def test_commit_then_complete(store: ArtifactStore, tmp_path: Path) -> None:
    src = write(tmp_path / "c.mp4", b"chunk-bytes" * 100)
    manifest = store.commit(src, "chunks/c0.mp4", digest="d1", job_id="job", frame_count=10, chunk_id=0)
    assert manifest.size == 1100 and manifest.sha256 == file_sha256(src) and manifest.chunk_id == 0
    assert store.is_complete("chunks/c0.mp4", "d1")
    assert not store.is_complete("chunks/c0.mp4", "other-digest")
    assert not store.is_complete("chunks/c1.mp4", "d1")
    assert store.read_manifest("chunks/c0.mp4") == manifest
    assert listing(store) == ["chunks/c0.mp4", "chunks/c0.mp4.done.json"]  # no temp keys left
    fetched = store.fetch("chunks/c0.mp4", tmp_path / "back.mp4")
    assert fetched.read_bytes() == src.read_bytes()
    assert store.uri("chunks/c0.mp4").endswith("/chunks/c0.mp4")


def test_not_complete_when_output_changed_or_manifest_broken(store: ArtifactStore, tmp_path: Path) -> None:
    src = write(tmp_path / "c.mp4", b"x" * 50)
    store.commit(src, "c.mp4", digest="d", job_id="job", frame_count=1)
    with store.fs.open(store.path("c.mp4"), "wb") as handle:  # truncated behind the store's back
        handle.write(b"x" * 10)
    assert not store.is_complete("c.mp4", "d")
    store.commit(src, "c.mp4", digest="d", job_id="job", frame_count=1)
    with store.fs.open(store.path("c.mp4.done.json"), "wb") as handle:
        handle.write(b"{not json")
    assert store.read_manifest("c.mp4") is None and not store.is_complete("c.mp4", "d")


def test_failed_upload_leaves_nothing_done(store: ArtifactStore, tmp_path: Path, monkeypatch) -> None:
    src = write(tmp_path / "c.mp4", b"first" * 20)
    store.commit(src, "c.mp4", digest="old", job_id="job", frame_count=1)
    write(src, b"second" * 20)

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    if store.is_local:
        monkeypatch.setattr("helios_kit.store.os.replace", broken)
    else:  # the upload (S3: straight to the final key) or the move from its temporary key fails
        monkeypatch.setattr(store.fs, "mv", broken)
        if store.url.startswith("s3://"):
            monkeypatch.setattr(store.fs, "put_file", broken)
    with pytest.raises(StoreError, match=r"cannot commit c\.mp4: .*disk on fire"):
        store.commit(src, "c.mp4", digest="new", job_id="job", frame_count=1)
    monkeypatch.undo()
    # the old manifest went first, so neither the old nor the new digest is done; no temp key is left
    assert not store.is_complete("c.mp4", "old") and not store.is_complete("c.mp4", "new")
    assert all(".tmp-" not in name for name in listing(store))


def test_manifest_is_written_last(store: ArtifactStore, tmp_path: Path, monkeypatch) -> None:
    src = write(tmp_path / "c.mp4", b"y" * 30)
    seen: list[bool] = []
    original = store._write_atomic

    def spy(path: str, data: bytes) -> None:
        seen.append(store.fs.exists(store.path("c.mp4")))  # the output is in place before its manifest
        original(path, data)

    monkeypatch.setattr(store, "_write_atomic", spy)
    store.commit(src, "c.mp4", digest="d", job_id="job", frame_count=1)
    assert seen == [True]


def test_empty_or_missing_source_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing or empty"):
        store.commit(write(tmp_path / "empty.mp4", b""), "c.mp4", digest="d", job_id="j", frame_count=1)
    with pytest.raises(StoreError, match="missing or empty"):
        store.commit(tmp_path / "nope.mp4", "c.mp4", digest="d", job_id="j", frame_count=1)


def test_concurrent_identical_commits(store: ArtifactStore, tmp_path: Path) -> None:
    sources = [write(tmp_path / f"w{i}.mp4", b"same-bytes" * 500) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: store.commit(s, "c.mp4", digest="d", job_id="j", frame_count=1), sources))
    assert store.is_complete("c.mp4", "d")
    assert listing(store) == ["c.mp4", "c.mp4.done.json"]


def test_delete(store: ArtifactStore, tmp_path: Path) -> None:
    store.commit(write(tmp_path / "c.mp4", b"z"), "a/c.mp4", digest="d", job_id="j", frame_count=1)
    store.delete("a/c.mp4")
    assert not store.is_complete("a/c.mp4", "d") and not store.exists("a/c.mp4")
    store.delete("a/c.mp4")  # idempotent


def test_check_writable(store: ArtifactStore) -> None:
    store.check_writable()
    assert all("probe" not in name for name in listing(store))


def test_not_writable_local(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", b"")
    with pytest.raises(StoreError, match=r"store .*file/store is not writable"):
        ArtifactStore(blocker / "store").check_writable()


def test_not_writable_s3_missing_bucket(s3_endpoint) -> None:
    with pytest.raises(StoreError, match=r"store s3://no-such-bucket-here/x is not writable"):
        ArtifactStore("s3://no-such-bucket-here/x/").check_writable()


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(StoreError) as info:
        ArtifactStore("nosuchscheme://bucket/x")
    assert "nosuchscheme://bucket/x" in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=1, max_size=2048),
    rel=st.from_regex(r"[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,2}\.mp4", fullmatch=True),
)
def test_roundtrip_property(tmp_path: Path, data: bytes, rel: str) -> None:
    store = ArtifactStore(f"memory://helios-prop/{uuid.uuid4().hex}")
    src = write(tmp_path / "src.bin", data)
    manifest = store.commit(src, rel, digest="dg", job_id="j", frame_count=3)
    assert store.is_complete(rel, "dg") and manifest.size == len(data)
    assert store.fetch(rel, tmp_path / "out.bin").read_bytes() == data


def test_s3_filesystems_share_one_botocore_session(s3_endpoint) -> None:
    """The loader, the composition and the store make S3 filesystems with different options; they share one
    aiobotocore session (botocore's models parsed once per process), unless a profile asks for its own."""
    from helios_kit.composition.locations import url_to_fs

    store = ArtifactStore(f"s3://store-tests/{uuid.uuid4().hex}")
    loader_fs, _ = url_to_fs("s3://store-tests/job.json", config_kwargs={"read_timeout": 7})
    assert loader_fs is not store.fs and loader_fs.session is store.fs.session is not None
    own, _ = url_to_fs("s3://store-tests/job.json", profile="someone")
    assert own.session is None  # s3fs makes that one itself, with the profile
