"""WorkerRuntime: one chunk from a job URL into a store, with a clear result for every failure (fake render)."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest
from fakes.aws import make_bucket, moto_s3
from fakes.loopback import LoopbackHTTPServer
from fakes.renders import bytes_render

from helios_kit.composition import chunk_digest, default_store_url, resolve_composition
from helios_kit.composition.deps import sha256_file as file_sha256
from helios_kit.errors import BrowserFault, RenderError
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dumps
from helios_kit.store import ArtifactStore
from helios_kit.worker import WorkerRuntime

logging.getLogger("werkzeug").setLevel(logging.ERROR)

HTML = "<!doctype html><body style='background:#123'>hello</body>"


def make_job(folder: Path, frames: int = 12, chunks: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(HTML)
    config = RenderConfig(input="index.html", width=160, height=120, fps=30, frame_count=frames)
    spec = plan_job(config, concurrency=chunks, job_id="job-1")
    path = folder / "job.json"
    path.write_text(dumps(spec))
    return path


class CountingRender:
    def __init__(self, inner=bytes_render, fail: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.inner = inner
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, config, **kwargs):
        with self.lock:
            self.calls.append(kwargs)
        if self.fail is not None:
            raise self.fail
        return self.inner(config, **kwargs)


@pytest.fixture
def runtime(tmp_path: Path) -> tuple[WorkerRuntime, CountingRender]:
    render = CountingRender()
    return WorkerRuntime(tmp_path / "ws", render=render), render


def test_local_job_renders_commits_then_skips(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    result = worker.run(str(job), 1)
    assert result.ok, result.stderr
    assert result.status == "ok" and result.frames == 4 and result.chunk_id == 1
    assert render.calls[0]["start_frame"] == 4 and render.calls[0]["frame_count"] == 4
    assert render.calls[0]["input_location"] == str(tmp_path / "job" / "index.html")
    store = ArtifactStore(tmp_path / "job")
    rel = result.output_file.removeprefix(str(tmp_path / "job") + "/")
    manifest = store.read_manifest(rel)
    assert manifest is not None and manifest.chunk_id == 1 and manifest.frame_count == 4
    assert manifest.sha256 == file_sha256(Path(result.output_file))
    # at-least-once: the same invocation again is a no-op
    again = worker.run(str(job), 1)
    assert again.status == "skipped" and len(render.calls) == 1
    assert "skipped" in again.stdout
    # with the manifest that vouched for it, byte for byte (the client's done index learns it from a retry
    # whose first attempt committed but never answered)
    assert again.manifest == result.manifest == (tmp_path / "job" / f"{rel}.done.json").read_text()
    # force renders anyway
    forced = worker.run(str(job), 1, force=True)
    assert forced.status == "ok" and len(render.calls) == 2
    # the workspace is cleaned up
    assert list((tmp_path / "ws").iterdir()) == []


def test_changed_composition_is_rendered_again(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    assert worker.run(str(job), 0).ok
    (tmp_path / "job" / "index.html").write_text(HTML.replace("#123", "#456"))
    result = worker.run(str(job), 0)
    assert result.status == "ok" and len(render.calls) == 2


def test_separate_store(tmp_path: Path, runtime) -> None:
    worker, _ = runtime
    job = make_job(tmp_path / "job")
    result = worker.run(str(job), 2, store=str(tmp_path / "store"))
    assert result.ok and result.output_file.startswith(str(tmp_path / "store"))
    assert not (tmp_path / "job" / "chunks").exists()


def test_invalid_json(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = tmp_path / "job.json"
    job.write_text('{"version": 1,\n  "jobId": }')
    result = worker.run(str(job), 0)
    assert result.status == "failed" and not result.retryable and not render.calls
    assert "invalid JSON at line 2" in result.stderr and "\n" not in result.stderr


def test_schema_error_names_field(tmp_path: Path, runtime) -> None:
    worker, _ = runtime
    job = make_job(tmp_path / "job")
    data = json.loads(job.read_text())
    data["config"]["fps"] = -1
    job.write_text(json.dumps(data))
    result = worker.run(str(job), 0)
    assert not result.ok and not result.retryable
    assert "config.fps" in result.stderr


def test_unknown_chunk_id(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    result = worker.run(str(job), 7)
    assert result.status == "failed" and not result.retryable and not render.calls
    assert "unknown chunk id 7" in result.stderr and "0-2" in result.stderr


def test_missing_job_file_is_not_retryable(tmp_path: Path, runtime) -> None:
    worker, _ = runtime
    result = worker.run(str(tmp_path / "nope.json"), 0)
    assert not result.ok and not result.retryable and "not found" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_network_failure_is_retryable(tmp_path: Path, runtime) -> None:
    worker, _ = runtime
    result = worker.run(f"http://127.0.0.1:{_free_port()}/job.json", 0, store=str(tmp_path / "store"))
    assert not result.ok and result.retryable
    assert "connection refused" in result.stderr


def test_store_not_writable(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = worker.run(str(job), 0, store=str(blocker / "store"))
    assert not result.ok and not result.retryable and not render.calls
    assert "not writable" in result.stderr and str(blocker) in result.stderr


def test_render_errors(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    bad = WorkerRuntime(tmp_path / "ws", render=CountingRender(fail=RenderError("composition threw: boom")))
    result = bad.run(str(job), 0)
    assert not result.ok and not result.retryable and "boom" in result.stderr
    crash = WorkerRuntime(tmp_path / "ws", render=CountingRender(fail=BrokenPipeError("ffmpeg went away")))
    result = crash.run(str(job), 0)
    assert not result.ok and result.retryable and "BrokenPipeError" in result.stderr
    # A lost frame or a stalled browser is not the composition's fault: another attempt may succeed.
    fault = BrowserFault("screenshot failed: Chromium produced no picture for frame 10")
    flaky = WorkerRuntime(tmp_path / "ws", render=CountingRender(fail=fault))
    result = flaky.run(str(job), 0)
    assert not result.ok and result.retryable and "no picture for frame 10" in result.stderr
    assert not ArtifactStore(tmp_path / "job").exists("chunks")  # nothing partial was committed


def test_cancelled_before_render(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    cancel = threading.Event()
    cancel.set()
    result = worker.run(str(job), 0, cancel=cancel)
    assert result.status == "cancelled" and not render.calls


def test_invoked_twice_at_once_commits_one_valid_chunk(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", chunks=1)
    render = CountingRender()
    worker = WorkerRuntime(tmp_path / "ws", render=render)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: worker.run(str(job), 0, force=True), range(4)))
    assert all(r.ok for r in results)
    folder = tmp_path / "job" / "chunks"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[1] == names[0] + ".done.json", names  # no temp files left
    store = ArtifactStore(tmp_path / "job")
    rel = f"chunks/{names[0]}"
    manifest = store.read_manifest(rel)
    assert manifest is not None and manifest.sha256 == file_sha256(folder / names[0])
    spec_digest = manifest.digest
    assert store.is_complete(rel, spec_digest)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    server = LoopbackHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_job_needs_a_store_and_renders_from_url(tmp_path: Path, runtime, http_root) -> None:
    worker, render = runtime
    root, base = http_root
    make_job(root / "jobs")
    url = f"{base}/jobs/job.json"
    result = worker.run(url, 0)
    assert not result.ok and not result.retryable and "give the artifact store" in result.stderr
    result = worker.run(url, 0, store=str(tmp_path / "store"))
    assert result.ok, result.stderr
    assert render.calls[0]["input_location"] == f"{base}/jobs/index.html"
    missing = worker.run(f"{base}/jobs/missing.json", 0, store=str(tmp_path / "store"))
    assert not missing.ok and not missing.retryable and "HTTP 404" in missing.stderr


def test_default_store_url() -> None:
    assert default_store_url("s3://bkt/jobs/intro.json") == "s3://bkt/jobs/"
    assert default_store_url("/x/y/job.json") == "/x/y"


def test_s3_job_with_derived_store(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    local = make_job(tmp_path / "src")
    (tmp_path / "src" / "assets").mkdir()
    (tmp_path / "src" / "assets" / "logo.svg").write_text("<svg/>")
    with moto_s3() as endpoint:
        make_bucket(endpoint, "bkt")
        fs = fsspec.filesystem("s3")
        for name in ("job.json", "index.html", "assets/logo.svg"):
            fs.put_file(str(tmp_path / "src" / name), f"bkt/jobs/{name}")
        url = "s3://bkt/jobs/job.json"
        first = worker.run(url, 0)
        assert first.ok, first.stderr
        assert first.output_file == "s3://bkt/jobs/chunks/" + Path(first.output_file).name
        assert fs.exists(first.output_file + ".done.json")
        # the composition was downloaded with its assets and without job outputs
        location = Path(render.calls[0]["input_location"])
        assert location.name == "index.html"
        # rendering the other chunks puts outputs beside the job; the digest ignores them
        assert worker.run(url, 1).ok and worker.run(url, 2).ok
        again = worker.run(url, 0)
        assert again.status == "skipped", again
        assert len(render.calls) == 3
        # a client resolving the same job sees the worker's chunk as complete: same digest, same files
        from helios_kit.spec import load

        spec = load(local)
        resolved = resolve_composition(spec, url, tmp_path / "client")
        local_resolved = resolve_composition(spec, str(local), tmp_path / "client2")
        manifest = ArtifactStore("s3://bkt/jobs/").read_manifest(spec.chunks[0].output_file)
        assert manifest.digest == chunk_digest(spec, spec.chunks[0])
        assert [dep.path for dep in manifest.dependencies] == ["index.html"]
        assert resolved.checker().unchanged(manifest.dependencies)
        assert local_resolved.checker().unchanged(manifest.dependencies)
        # an unwritable store (missing bucket) is a clear, non-retryable error
        bad = worker.run(url, 1, store="s3://no-such-bucket/x/", force=True)
        assert not bad.ok and not bad.retryable and "s3://no-such-bucket/x" in bad.stderr


# -- `helios worker run` ---------------------------------------------------------------------------------------


def test_worker_run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from helios_kit.cli import cli

    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.renders:bytes_render")
    job = make_job(tmp_path / "job")
    runner = CliRunner()
    result = runner.invoke(cli, ["worker", "run", str(job), "1", "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert "chunk 1: frames [4, 8)" in result.output
    again = runner.invoke(cli, ["worker", "run", str(job), "1", "--store", str(tmp_path / "store"), "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["status"] == "skipped"
    missing = runner.invoke(cli, ["worker", "run", str(job), "9"])
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == ["error: unknown chunk id 9: job job-1 has ids 0-2"]
    assert "Traceback" not in missing.output


def test_s3_unreachable_is_retryable(tmp_path: Path, runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes.aws import aws_env

    for key, value in aws_env(f"http://127.0.0.1:{_free_port()}").items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    worker, render = runtime
    result = worker.run("s3://bkt/jobs/job.json", 0)
    assert not result.ok and result.retryable and not render.calls
    assert "EndpointConnectionError" in result.stderr and "s3://bkt/jobs/job.json" in result.stderr
    s3fs.S3FileSystem.clear_instance_cache()


def test_changed_spec_at_same_url_is_reloaded(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    assert worker.run(str(job), 0).ok and render.calls[-1]["frame_count"] == 4
    make_job(tmp_path / "job", frames=12, chunks=2)  # same URL, new content: no stale cached spec
    result = worker.run(str(job), 0)
    assert result.status == "ok" and render.calls[-1]["frame_count"] == 6


def test_warm_worker_reuses_downloaded_composition_until_it_changes(tmp_path: Path, runtime) -> None:
    from helios_kit.worker.runtime import COMPOSITION_CACHE_DIR

    worker, render = runtime
    make_job(tmp_path / "src")
    cache = tmp_path / "ws" / COMPOSITION_CACHE_DIR
    with moto_s3() as endpoint:
        make_bucket(endpoint, "bkt")
        fs = fsspec.filesystem("s3")
        for name in ("job.json", "index.html"):
            fs.put_file(str(tmp_path / "src" / name), f"bkt/jobs/{name}")
        url = "s3://bkt/jobs/job.json"
        assert worker.run(url, 0).ok and worker.run(url, 1).ok
        versions = [p.name for p in cache.iterdir()]
        assert len(versions) == 1  # downloaded once, reused by the second chunk (outputs not part of it)
        assert render.calls[0]["input_location"] == render.calls[1]["input_location"]
        assert render.calls[0]["input_location"].startswith(str(cache / versions[0]))
        with fs.open("bkt/jobs/index.html", "wb") as handle:  # same size, new content
            handle.write(HTML.replace("#123", "#321").encode())
        result = worker.run(url, 0)
        assert result.status == "ok"  # new content → new digest → rendered again
        assert len(list(cache.iterdir())) == 2
        assert Path(render.calls[-1]["input_location"]).read_text() == HTML.replace("#123", "#321")


def test_a_store_that_cannot_exist_is_not_retried(tmp_path: Path, runtime) -> None:
    worker, render = runtime
    job = make_job(tmp_path / "job")
    result = worker.run(str(job), 0, store="nosuchscheme://bucket/out")
    assert result.status == "failed" and not result.retryable and not render.calls
    assert result.stderr.startswith("store nosuchscheme://bucket/out") and "\n" not in result.stderr


@pytest.mark.render
def test_a_worker_with_lanes_renders_each_chunk_in_that_many_browsers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELIOS_WORKER_LANES=2: the chunk is rendered in 2 browsers at once, and equals a one-browser render
    (the frame-index fixture's frames); a value that is not a count fails the chunk naming it, unretryably."""
    from helios_kit.render.browser import Browser
    from tests.render.conftest import FIXTURES, decode, frame_indices

    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "index.html").write_text((FIXTURES / "frame_index" / "index.html").read_text())
    spec = plan_job(
        RenderConfig(input="index.html", width=320, height=240, fps=30, frame_count=40), concurrency=2, job_id="lanes"
    )
    (folder / "job.json").write_text(dumps(spec))
    launches: list[int] = []
    launch = Browser.__init__

    def counted(self: Browser, *args: object, **kwargs: object) -> None:
        launches.append(1)
        launch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Browser, "__init__", counted)
    monkeypatch.setenv("HELIOS_WORKER_LANES", "2")
    result = WorkerRuntime(tmp_path / "ws").run(str(folder / "job.json"), 1)
    assert result.ok, result.stderr
    assert len(launches) == 2
    assert frame_indices(decode(Path(result.output_file), 320, 240)) == [(n, n, n) for n in range(20, 40)]

    monkeypatch.setenv("HELIOS_WORKER_LANES", "two")
    failed = WorkerRuntime(tmp_path / "ws").run(str(folder / "job.json"), 0)
    assert not failed.ok and not failed.retryable
    assert "HELIOS_WORKER_LANES must be a whole number of browsers, 1 or more, got 'two'" in failed.stderr
