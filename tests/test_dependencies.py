"""Dependency-exact completeness: a chunk re-renders when, and only when, something its render loaded changed.

Unit tests cover the recording (the composition server) and the checking (hash-once, URLs, absent files);
the render tests run `helios job run` with real Chromium on a composition that loads `style.css` with the
page and fetches `late.txt` from a timer at frame 12, split into chunks of 5 frames at 10 fps.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from helios_kit.composition import Dependency, DependencyChecker, FileHasher, chunk_digest
from helios_kit.composition import deps as deps_module
from helios_kit.planner import plan_job
from helios_kit.render.server import CompositionServer
from helios_kit.spec import RenderConfig, dump, load
from helios_kit.store import ArtifactStore

FIXTURE = Path(__file__).parent / "fixtures" / "deps"


# -- recording -------------------------------------------------------------------------------------------------


def test_server_records_what_was_asked_for_and_refuses_dotfiles_and_escapes(tmp_path: Path) -> None:
    root = tmp_path / "comp"
    shutil.copytree(FIXTURE, root)
    (root / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (root / "escape.txt").symlink_to(outside)
    (root / "notes.txt").write_text("never asked for")
    with CompositionServer(root) as server:
        with httpx.Client(base_url=server.base_url) as client:
            assert client.get("index.html").status_code == 200
            assert client.get("style.css?v=3").status_code == 200
            assert client.get("missing.png").status_code == 404
            for refused in (".env", ".git/config", "escape.txt", "%2e%2e/outside.txt", "sub/%2e%2e/%2e%2e/outside.txt"):
                assert client.get(refused).status_code == 404, refused
            (root / "sub").mkdir()
            assert client.get("sub/").status_code == 404  # no directory listings
        served = server.served()
    by_path = {dep.path: dep for dep in served}
    assert sorted(by_path) == ["index.html", "missing.png", "style.css"]
    assert by_path["missing.png"].size is None
    assert by_path["style.css"].size == (root / "style.css").stat().st_size
    assert by_path["style.css"].sha256 == deps_module.sha256_file(root / "style.css")


def test_server_queues_a_burst_of_connections_while_its_thread_is_busy(tmp_path: Path) -> None:
    """Two lanes' browsers open six connections each at once. The kernel must queue them all until the
    serving thread accepts: with the standard library's backlog of 5 it dropped the rest, and each waited
    for Chromium's SYN retry a second later. Here the accept loop is stopped (its socket still listens), so
    a connection completes only if the backlog holds it; a dropped one times out."""
    (tmp_path / "index.html").write_text("<p>hi</p>")
    with CompositionServer(tmp_path) as server:
        server._httpd.shutdown()  # the loop stops; the listening socket stays
        burst = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(24)]
        for connection in burst:
            connection.close()


# -- checking --------------------------------------------------------------------------------------------------


def test_checker_sees_changes_deletions_and_creations(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    hasher = FileHasher()
    recorded = [deps_module.file_dependency(tmp_path, "a.txt", hasher), Dependency(path="b.txt")]
    assert DependencyChecker(tmp_path, hasher).unchanged(recorded)
    (tmp_path / "a.txt").write_text("two")
    assert not DependencyChecker(tmp_path, hasher).unchanged(recorded)
    (tmp_path / "a.txt").write_text("one")
    assert DependencyChecker(tmp_path, hasher).unchanged(recorded)
    (tmp_path / "b.txt").write_text("now it exists")
    assert not DependencyChecker(tmp_path, hasher).unchanged(recorded)
    (tmp_path / "b.txt").unlink()
    (tmp_path / "a.txt").unlink()
    assert not DependencyChecker(tmp_path, hasher).unchanged(recorded)


def test_each_file_is_hashed_once_while_its_size_and_mtime_stay(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    hasher = FileHasher()
    recorded = [deps_module.file_dependency(tmp_path, "a.txt", hasher)]
    for _ in range(50):
        assert DependencyChecker(tmp_path, hasher).unchanged(recorded)
    assert hasher.hashed == 1
    os.utime(tmp_path / "a.txt", ns=(1, 1))
    assert DependencyChecker(tmp_path, hasher).unchanged(recorded)
    assert hasher.hashed == 2


def test_recorded_paths_never_leave_the_root(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    root = tmp_path / "comp"
    root.mkdir()
    assert deps_module.file_dependency(root, "../secret").size is None
    assert deps_module.file_dependency(root, "/etc/hostname").size is None


def test_url_dependencies_use_etag_or_content(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    with CompositionServer(tmp_path) as server:
        url = server.base_url + "a.txt"
        recorded = deps_module.url_dependency(url)
        assert recorded.sha256 == deps_module.sha256_file(tmp_path / "a.txt") and recorded.size == 3
        assert DependencyChecker(None).unchanged([recorded])
        (tmp_path / "a.txt").write_text("two")
        assert not DependencyChecker(None).unchanged([recorded])
        gone = deps_module.url_dependency(server.base_url + "nope.txt")
        assert gone.size is None and DependencyChecker(None).unchanged([gone])
    tagged = Dependency(url="u", size=1, etag='"x"')
    assert deps_module.same_content(tagged, Dependency(url="u", size=2, etag='"x"'))
    assert not deps_module.same_content(tagged, Dependency(url="u", size=1, etag='"y"'))


# -- real renders ----------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = dict(
        os.environ, HELIOS_TEST_PROCESS_TAG=f"helios-deps-{uuid.uuid4().hex}", HELIOS_HOME=str(tmp_path / "home")
    )
    environment.pop("HELIOS_WORKER_RENDER", None)
    return environment


def make_job(tmp_path: Path, input_ref: str = "comp/index.html", chunks: int = 4) -> Path:
    if not (tmp_path / "comp").exists():
        shutil.copytree(FIXTURE, tmp_path / "comp")
    config = RenderConfig(input=input_ref, width=160, height=120, fps=10, frame_count=20, output="out.mp4")
    job = tmp_path / "job.json"
    dump(plan_job(config, concurrency=chunks, job_id="deps"), job)
    return job


def run_job(job: Path, env: dict[str, str]) -> dict[int, str]:
    """Run the job; return each chunk's manifest creation time (what changed = what was rendered)."""
    result = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--concurrency", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=job.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    spec = load(job)
    store = ArtifactStore(job.parent)
    stamps = {}
    for chunk in spec.chunks:
        manifest = store.read_manifest(chunk.output_file)
        assert manifest is not None
        stamps[chunk.id] = manifest.created_at.isoformat()
    return stamps


def rendered_between(before: dict[int, str], after: dict[int, str]) -> list[int]:
    return sorted(chunk_id for chunk_id in after if after[chunk_id] != before.get(chunk_id))


def manifest_paths(job: Path) -> dict[int, list[str]]:
    spec = load(job)
    store = ArtifactStore(job.parent)
    result = {}
    for chunk in spec.chunks:
        manifest = store.read_manifest(chunk.output_file)
        assert manifest is not None
        result[chunk.id] = [dep.path or dep.url or "" for dep in manifest.dependencies if dep.size is not None]
    return result


@pytest.mark.render
def test_reruns_redo_exactly_the_chunks_whose_dependencies_changed(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path)
    first = run_job(job, env)
    loaded = manifest_paths(job)
    assert all("index.html" in paths and "style.css" in paths for paths in loaded.values())
    # late.txt is fetched at frame 12: chunks [10, 15) and [15, 20) reached it (the last by fast-forward)
    assert ["late.txt" in loaded[chunk_id] for chunk_id in range(4)] == [False, False, True, True]

    # unrelated files in the folder, the job's own log, another job's output: nothing re-renders
    (tmp_path / "comp" / "notes.txt").write_text("todo")
    (tmp_path / "comp" / ".index.html.swp").write_bytes(b"\0" * 64)
    (tmp_path / "comp" / "footage.mov").write_bytes(os.urandom(1 << 20))
    (tmp_path / "run.log").write_text("log")
    second = run_job(job, env)
    assert rendered_between(first, second) == []

    (tmp_path / "comp" / "late.txt").write_text("late v2\n")
    third = run_job(job, env)
    assert rendered_between(second, third) == [2, 3]

    (tmp_path / "comp" / "style.css").write_text("html,body{margin:0;background:#321;color:#fff}\n")
    fourth = run_job(job, env)
    assert rendered_between(third, fourth) == [0, 1, 2, 3]

    (tmp_path / "comp" / "late.txt").unlink()
    fifth = run_job(job, env)
    assert rendered_between(fourth, fifth) == [2, 3]


@pytest.mark.render
def test_a_no_op_check_never_hashes_files_the_page_did_not_load(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from helios_kit.context import JobContext

    job = make_job(tmp_path, chunks=2)
    run_job(job, env)
    (tmp_path / "comp" / "unrelated.bin").write_bytes(os.urandom(1 << 16))
    hashed: list[str] = []
    real = deps_module.sha256_file

    def spy(path: str | os.PathLike[str]) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(deps_module, "sha256_file", spy)
    monkeypatch.setattr(deps_module, "FILE_HASHER", FileHasher())
    spec = load(job)
    ctx = JobContext.prepare(spec, str(job), tmp_path)
    ctx.checker.hasher = deps_module.FILE_HASHER
    assert all(ctx.chunk_complete(chunk) for chunk in spec.chunks)
    assert "unrelated.bin" not in hashed
    assert sorted(hashed) == sorted(set(hashed))  # each file at most once in a run
    assert {"index.html", "style.css"} <= set(hashed)


@pytest.mark.render
def test_a_composition_served_over_http_records_its_responses(tmp_path: Path, env: dict[str, str]) -> None:
    shutil.copytree(FIXTURE, tmp_path / "site")
    with CompositionServer(tmp_path / "site") as site:
        job = make_job(tmp_path, input_ref=site.base_url + "index.html", chunks=2)
        first = run_job(job, env)
        urls = manifest_paths(job)
        assert site.base_url + "late.txt" in urls[1] and site.base_url + "late.txt" not in urls[0]
        assert site.base_url + "style.css" in urls[0]
        assert rendered_between(first, run_job(job, env)) == []
        (tmp_path / "site" / "late.txt").write_text("late v2\n")
        second = run_job(job, env)
        assert rendered_between(first, second) == [1]
    spec = load(job)
    manifest = ArtifactStore(tmp_path).read_manifest(spec.chunks[0].output_file)
    assert manifest is not None and manifest.digest == chunk_digest(spec, spec.chunks[0])
    assert manifest.media_seen == 0  # a page without media: the merge looks for no soundtrack
    assert json.loads(manifest.model_dump_json(by_alias=True))["dependencies"][0].keys() >= {"url", "sha256"}


@pytest.mark.render
def test_a_render_counts_the_media_its_page_showed(tmp_path: Path) -> None:
    from helios_kit.render import render_range

    examples = Path(__file__).resolve().parents[1] / "examples"
    with_media = render_range(
        RenderConfig(input="index.html", width=160, height=90, fps=30, frame_count=1),
        input_location=str(examples / "timeline"),
        start_frame=0,
        frame_count=1,
        output_path=tmp_path / "timeline.mp4",
    )
    without = render_range(
        RenderConfig(input="index.html", width=160, height=120, fps=10, frame_count=1),
        input_location=str(FIXTURE),
        start_frame=0,
        frame_count=1,
        output_path=tmp_path / "deps.mp4",
    )
    assert with_media.media_seen and with_media.media_seen >= 1
    assert without.media_seen == 0
