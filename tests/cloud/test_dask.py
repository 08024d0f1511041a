"""The `dask` backend (plugins/helios-dask) against real Dask processes on 127.0.0.1: a `dask scheduler` and
two `dask worker` processes (fakes.dask_cluster), `helios job run --backend dask` as a subprocess, chunks
rendered by the frame-index fake render and the merged output checked frame-exact. Also: a job and store on
S3 (moto), a worker SIGKILLed while it renders a chunk, the scheduler lost mid-run, cancel and timeout
reaching the render on its worker, the LocalCluster default (and one real Chromium render in it), an
unreachable scheduler, and options the backend does not take."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from concurrent.futures import CancelledError
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from fakes.cloudjobs import make_spec, upload_job
from fakes.dask_cluster import DaskCluster, free_port, marks_of, write_render_settings
from fakes.jobs import make_job, wait_no_tagged_processes
from fakes.renders import decode_frame_indexes
from fakes.waiting import wait_for
from helios_dask.backend import DaskBackend, DaskOptions, parse_resources

from helios_kit.backends.base import ChunkContext
from helios_kit.backends.remote import RemoteFailure
from helios_kit.errors import SpecError
from helios_kit.loaders import load_spec
from helios_kit.plugins import make_backend
from helios_kit.protocol import WorkerStatus
from helios_kit.store import ArtifactStore

HELIOS = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"
WIDTH, HEIGHT = 160, 120


@pytest.fixture(autouse=True)
def helios_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Job records of these runs go to the test's folder."""
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))


@pytest.fixture
def dask_env(worker_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """worker_env (fake render, PYTHONPATH with tests/) with the render that leaves marks."""
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.dask_cluster:marked_frame_index_render")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One scheduler and two single-threaded workers (resource chromium=1) for the tests that kill none.
    Module-scoped, so it sets its workers' environment itself (the same as dask_env)."""
    tests_dir = Path(__file__).resolve().parents[1]
    with pytest.MonkeyPatch.context() as patch:
        path = os.environ.get("PYTHONPATH", "")
        patch.setenv("PYTHONPATH", f"{tests_dir}{os.pathsep}{path}" if path else str(tests_dir))
        patch.setenv("HELIOS_WORKER_RENDER", "fakes.dask_cluster:marked_frame_index_render")
        patch.delenv("HELIOS_FAKE_RENDER_SLEEP", raising=False)
        patch.delenv("HELIOS_FAKE_RENDER_FAIL_FRAMES", raising=False)
        with DaskCluster(2, logs=tmp_path_factory.mktemp("dask-logs")) as cluster:
            yield cluster


def job_run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [HELIOS, "job", "run", *args, "--quiet", "--retry-delay", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def merged_frames(job: Path) -> list[int]:
    return decode_frame_indexes(job.parent / "out.mp4", WIDTH, HEIGHT)


# -- against `dask scheduler` + two `dask worker` ------------------------------------------------------------
def test_job_on_scheduler_and_two_workers_is_frame_exact(shared_cluster, dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=36, chunks=6, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, sleep=0.3, marks=marks)
    # No straggler backups: a backup is a second attempt by design, started when a chunk runs 1.5x the median,
    # which a loaded machine can make any chunk do (seen once: chunk 24 started twice); this test counts attempts.
    done = job_run(
        str(job),
        "--backend",
        "dask",
        "--scheduler",
        shared_cluster.address,
        "--resources",
        "chromium=1",
        "--no-backups",
    )
    assert done.returncode == 0, done.stderr
    assert "6 rendered, 0 skipped (complete), 0 failed" in done.stdout
    assert merged_frames(job) == list(range(36))
    started = marks_of(marks, "started")
    assert [start for start, _ in started] == [0, 6, 12, 18, 24, 30]  # one attempt per chunk
    assert {pid for _, pid in started} == set(shared_cluster.worker_pids())  # both workers rendered

    again = job_run(str(job), "--backend", "dask", "--scheduler", shared_cluster.address)
    assert again.returncode == 0, again.stderr
    assert "0 rendered, 6 skipped (complete)" in again.stdout
    assert len(marks_of(marks, "started")) == 6  # a re-run renders nothing


def test_default_concurrency_is_the_clusters_slots(shared_cluster) -> None:
    with DaskBackend(DaskOptions(scheduler=shared_cluster.address)) as backend:
        assert backend.default_concurrency() == 2  # two workers x one thread
    with DaskBackend(DaskOptions(scheduler=shared_cluster.address, resources="chromium=1")) as backend:
        assert backend.default_concurrency() == 2
    with DaskBackend(DaskOptions(scheduler=shared_cluster.address, resources="chromium=2")) as backend:
        assert backend.default_concurrency() == 1  # no worker holds 2: at least one slot, and a warning


def _start_chunk(backend: DaskBackend, job: Path, *, timeout: float | None = None):
    """run_chunk of chunk 0 in a thread; returns (cancel event, thread, box holding the result)."""
    spec, job_dir = load_spec(str(job))
    context = ChunkContext(job_url=str(job), job_dir=str(job_dir), store_url=str(job.parent))
    cancel, box = threading.Event(), {}

    def run() -> None:
        box["result"] = backend.run_chunk(spec, spec.chunks[0], context, cancel=cancel, timeout=timeout)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return cancel, thread, box


def test_cancel_reaches_the_render_on_its_worker(shared_cluster, dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, sleep=120, marks=marks)
    with DaskBackend(DaskOptions(scheduler=shared_cluster.address)) as backend:
        cancel, thread, box = _start_chunk(backend, job)
        wait_for(lambda: marks_of(marks, "started"), 60, "chunk 0 to start on a worker")
        cancel.set()
        thread.join(30)
        assert box["result"].status is WorkerStatus.CANCELLED
        # the Dask event reached the render: it stopped sleeping, marked it, and nothing was committed
        wait_for(lambda: marks_of(marks, "cancelled"), 30, "the render to see the cancel")
    assert not (job.parent / "chunks" / "chunk-0000.mp4").exists()


def test_timeout_cancels_the_task_and_is_retryable(shared_cluster, dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, sleep=120, marks=marks)
    with DaskBackend(DaskOptions(scheduler=shared_cluster.address)) as backend:
        _, thread, box = _start_chunk(backend, job, timeout=1.0)
        thread.join(60)
        result = box["result"]
        assert result.status is WorkerStatus.TIMED_OUT and result.retryable, result
        assert "no answer within 1 s" in result.stderr
        wait_for(lambda: marks_of(marks, "cancelled"), 30, "the render to see the cancel")


def test_job_and_store_on_s3_as_across_machines(s3, dask_env, tmp_path: Path) -> None:
    """The README's multi-machine layout: the job, its composition and the store on S3 (moto), workers that
    share no folder with the client."""
    spec = make_spec(frames=12, chunks=3, job_id="dask-s3")
    url = upload_job(spec, "s3://renders/jobs/dask")
    store = "s3://renders/out/dask"
    with DaskCluster(2, logs=tmp_path / "dask-logs") as cluster:
        argv = [url, "--backend", "dask", "--scheduler", cluster.address, "--resources", "chromium=1"]
        done = job_run(*argv, "--store", store)
    assert done.returncode == 0, done.stderr
    assert "3 rendered, 0 skipped (complete), 0 failed" in done.stdout
    merged = ArtifactStore(store).fetch(spec.merge.output_file, tmp_path / "merged.mp4")
    assert decode_frame_indexes(merged, spec.config.width, spec.config.height) == list(range(12))


# -- a worker killed mid-chunk ------------------------------------------------------------------------------
def test_worker_killed_mid_chunk_job_completes_frame_exact(dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=24, chunks=4, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, sleep=2.0, marks=marks)
    with DaskCluster(2, logs=tmp_path / "dask-logs") as cluster:
        client = subprocess.Popen(
            [HELIOS, "job", "run", str(job), "--backend", "dask", "--scheduler", cluster.address, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            start, victim = wait_for(lambda: marks_of(marks, "started"), 120, "a chunk to start rendering")[0]
            cluster.kill_worker(victim)  # mid-chunk: the render sleeps 2 s before it writes anything
            stdout, stderr = client.communicate(timeout=240)
        finally:
            if client.poll() is None:
                os.killpg(client.pid, 9)
                client.wait()
        assert client.returncode == 0, stderr
        assert "4 rendered, 0 skipped (complete), 0 failed" in stdout
        assert merged_frames(job) == list(range(24))
        survivor = next(pid for pid in cluster.worker_pids() if pid != victim)
        assert (start, survivor) in marks_of(marks, "started")  # the killed worker's chunk was redone elsewhere


def test_scheduler_lost_mid_run_ends_the_run_with_one_line_per_chunk(dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=2, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, sleep=60, marks=marks)
    with DaskCluster(1, logs=tmp_path / "dask-logs") as cluster:
        argv = [HELIOS, "job", "run", str(job), "--backend", "dask", "--scheduler", cluster.address]
        client = subprocess.Popen(
            [*argv, "--scheduler-timeout", "2", "--quiet", "--retry-delay", "0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for(lambda: marks_of(marks, "started"), 120, "a chunk to start rendering")
            cluster.kill_scheduler()
            stdout, stderr = client.communicate(timeout=120)  # it gives up; it does not wait for ever
        finally:
            if client.poll() is None:
                os.killpg(client.pid, 9)
                client.wait()
            cluster.kill_worker(cluster.worker_pids()[0])  # its render sleeps on; no need to wait for it
    assert client.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error: chunk")]
    assert len(errors) == 2, stderr
    assert all(f"lost Dask scheduler {cluster.address}" in line for line in errors), stderr
    assert "Traceback" not in stderr
    assert "0 rendered, 0 skipped (complete), 2 failed" in stdout


# -- the LocalCluster default ---------------------------------------------------------------------------------
def test_without_scheduler_a_local_cluster_runs_the_job_and_goes_away(dask_env, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=20, chunks=4, width=WIDTH, height=HEIGHT)
    marks = tmp_path / "marks"
    write_render_settings(job.parent, marks=marks)
    tag = uuid.uuid4().hex
    argv = [str(job), "--backend", "dask", "--workers", "2", "--no-backups"]  # counts attempts (see above)
    done = job_run(*argv, env_extra={"HELIOS_TEST_PROCESS_TAG": tag})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # distributed's connection chatter stays out of the way
    assert merged_frames(job) == list(range(20))
    pids = {pid for _, pid in marks_of(marks, "started")}
    assert len(marks_of(marks, "started")) == 4 and os.getpid() not in pids  # rendered in worker processes
    assert wait_no_tagged_processes(tag) == []  # the cluster closed with the backend


@pytest.mark.render
def test_real_chromium_renders_inside_a_dask_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one real render: Chromium and ffmpeg started from a Dask worker's task thread, frame-exact."""
    monkeypatch.delenv("HELIOS_WORKER_RENDER", raising=False)
    job = make_job(tmp_path / "job", frames=8, chunks=2, width=WIDTH, height=HEIGHT)
    tag = uuid.uuid4().hex
    done = job_run(str(job), "--backend", "dask", "--workers", "1", env_extra={"HELIOS_TEST_PROCESS_TAG": tag})
    assert done.returncode == 0, done.stderr
    assert merged_frames(job) == list(range(8))
    assert wait_no_tagged_processes(tag) == []  # no Chromium, ffmpeg or worker left behind


def test_local_cluster_is_sized_from_the_options() -> None:
    backend = DaskBackend(DaskOptions(workers=3, threads=2))
    try:
        assert backend.default_concurrency() == 6
        assert backend._cluster is None  # nothing started before a chunk needs it
    finally:
        backend.close()


# -- what a user gets wrong -----------------------------------------------------------------------------------
def test_unreachable_scheduler_is_one_line_and_a_failure(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=1, width=WIDTH, height=HEIGHT)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    done = job_run(str(job), "--backend", "dask", "--scheduler", address, "--scheduler-timeout", "1")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: dask: cannot reach the scheduler at {address}")
    assert not (job.parent / "out.mp4").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--function", "f"], "--function is an option of backend lambda, not of 'dask'"),
        (["--bogus", "1"], "No such option"),
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers and --threads size the local cluster"),
        (["--resources", "chromium"], "resources: 'chromium' is not NAME=AMOUNT"),
    ],
)
def test_options_the_backend_does_not_take_are_rejected(tmp_path: Path, flags: list[str], message: str) -> None:
    from helios_kit.cli import cli

    job = make_job(tmp_path / "job", frames=4, chunks=1, width=WIDTH, height=HEIGHT)
    result = CliRunner().invoke(cli, ["job", "run", str(job), "--backend", "dask", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_option_names_are_rejected_by_make_backend() -> None:
    with pytest.raises(SpecError, match=r"backend dask: .*nope"):
        make_backend("dask", {"nope": 1})


def test_resources_parse() -> None:
    assert parse_resources("chromium=1") == {"chromium": 1.0}
    both = {"chromium": 1.0, "gpu": 0.5}
    assert parse_resources("chromium=1, gpu=0.5") == parse_resources("chromium=1 gpu=0.5") == both
    for bad in ("chromium", "chromium=0", "=1", "chromium=x", ""):
        with pytest.raises(ValueError):
            parse_resources(bad)


# -- what Dask's errors mean ----------------------------------------------------------------------------------
def test_dask_failures_are_one_line_and_say_whether_a_retry_can_help() -> None:
    from distributed.scheduler import KilledWorker

    backend = DaskBackend(DaskOptions())
    try:
        killed = backend.describe_failure(KilledWorker("k", SimpleNamespace(address="tcp://10.0.0.7:4000"), 3))
        assert killed.retryable and "KilledWorker after 4 workers, the last tcp://10.0.0.7:4000" in str(killed)
        cancelled = backend.describe_failure(CancelledError("k"))
        assert cancelled.retryable and "cancelled" in str(cancelled)
        lost = backend.describe_failure(OSError("Timed out trying to connect"))
        assert lost.retryable and "lost the connection" in str(lost)
        missing = backend.describe_failure(ModuleNotFoundError("No module named 'helios_dask'"))
        assert not missing.retryable and "pip install helios-dask on every worker" in str(missing)
        for failure in (killed, cancelled, lost, missing):
            assert "\n" not in str(failure)
    finally:
        backend.close()


def test_local_paths_warn_once_when_workers_run_on_other_machines(caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=2, width=WIDTH, height=HEIGHT)
    spec, job_dir = load_spec(str(job))
    context = ChunkContext(job_url=str(job), job_dir=str(job_dir), store_url=str(job.parent))
    remote = ChunkContext(job_url="s3://renders/job.json", job_dir=str(job_dir), store_url="s3://renders/out/")
    backend = DaskBackend(DaskOptions())
    try:
        backend.check_chunk(spec, spec.chunks[0], context)
        assert not caplog.records  # workers on this machine read local paths
        backend._workers_all_local = False  # as after connecting to a scheduler with workers elsewhere
        backend.check_chunk(spec, spec.chunks[0], remote)
        assert not caplog.records
        for chunk in spec.chunks:
            backend.check_chunk(spec, chunk, context)
        messages = [record.getMessage() for record in caplog.records]
        assert len(messages) == 2, messages  # once for the job, once for the store
        assert f"the job {job} is a local path; every Dask worker must see it at that path" in messages[0]
    finally:
        backend.close()


def test_a_closed_backend_starts_no_cluster(tmp_path: Path) -> None:
    """An attempt still winding down after the run closed its backend fails; it never starts a LocalCluster."""
    job = make_job(tmp_path / "job", frames=4, chunks=1, width=WIDTH, height=HEIGHT)
    backend = DaskBackend(DaskOptions(workers=1))
    backend.close()
    spec, job_dir = load_spec(str(job))
    context = ChunkContext(job_url=str(job), job_dir=str(job_dir), store_url=str(job.parent))
    result = backend.run_chunk(spec, spec.chunks[0], context, cancel=threading.Event())
    assert result.status is WorkerStatus.FAILED and not result.retryable
    assert "the backend is closed" in result.stderr
    assert backend._cluster is None


def test_a_live_worker_missing_from_the_schedulers_list_is_waited_for(tmp_path: Path) -> None:
    """Once a worker is block-listed, a moment in which the scheduler lists no other (seen in CI under load)
    fails the attempt retryably; only when every worker ever seen is block-listed is it final."""
    backend = DaskBackend(DaskOptions(workers=1, max_worker_failures=2))
    listed: dict[str, dict[str, int]] = {}
    backend._client = SimpleNamespace(scheduler_info=lambda n_workers=-1: {"workers": dict(listed)})
    try:
        listed.update({"tcp://127.0.0.1:1": {}, "tcp://127.0.0.1:2": {}})
        assert backend._allowed_workers() is None  # nothing block-listed: any worker
        for _ in range(2):
            backend._count_failure({"status": "failed", "worker": "tcp://127.0.0.1:1"})
        assert backend._allowed_workers() == ["tcp://127.0.0.1:2"]
        del listed["tcp://127.0.0.1:2"]  # the good worker drops out of the list for a moment
        with pytest.raises(RemoteFailure, match="a retry waits for one") as waiting:
            backend._allowed_workers()
        assert waiting.value.retryable
        listed["tcp://127.0.0.1:2"] = {}
        assert backend._allowed_workers() == ["tcp://127.0.0.1:2"]
        for _ in range(2):
            backend._count_failure({"status": "failed", "worker": "tcp://127.0.0.1:2"})
        with pytest.raises(RemoteFailure, match=r"every worker of .* is block-listed") as final:
            backend._allowed_workers()
        assert not final.value.retryable
    finally:
        backend._client = None
        backend.close()


def test_a_worker_named_by_an_answer_counts_as_seen() -> None:
    backend = DaskBackend(DaskOptions(workers=1, max_worker_failures=2))
    backend._client = SimpleNamespace(scheduler_info=lambda n_workers=-1: {"workers": {"tcp://127.0.0.1:1": {}}})
    try:
        backend._count_failure({"status": "done", "worker": "tcp://127.0.0.1:2"})  # a chunk it rendered
        for _ in range(2):
            backend._count_failure({"status": "failed", "worker": "tcp://127.0.0.1:1"})
        with pytest.raises(RemoteFailure) as waiting:
            backend._allowed_workers()
        assert waiting.value.retryable
    finally:
        backend._client = None
        backend.close()
