"""Run history: each run its own record with times; `helios job list/status` over runs; a run whose owner was
killed (-9) shows `interrupted`; a repository registered by a plugin is used by every job command; a
database of the old layout (one row per job id) is migrated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.jobs import make_job, tagged_processes
from hypothesis import given, settings
from hypothesis import strategies as st
from test_executor import ScriptedBackend

from helios_kit.cli import cli
from helios_kit.hookspecs import hookimpl
from helios_kit.manager import JobManager
from helios_kit.plugins import get_plugins, reset_plugins
from helios_kit.repository import InMemoryJobRepository, JobState, JobStatus, SQLiteJobRepository, this_host, utcnow

TESTS = Path(__file__).parent


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_each_run_is_a_record_with_its_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HELIOS_REPOSITORY", raising=False)
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    manager = JobManager(SQLiteJobRepository())
    first = manager.run(manager.create(job, backend=ScriptedBackend(tmp_path / "ws")).id)
    second = manager.run(manager.create(job, backend=ScriptedBackend(tmp_path / "ws"), options=None).id)
    assert first.run_id != second.run_id and first.id == second.id == "job-1"
    runs = manager.runs("job-1")
    assert [run.run_id for run in runs] == [second.run_id, first.run_id]
    for run in runs:
        assert run.state is JobState.COMPLETED and run.host == this_host() and run.pid == os.getpid()
        assert run.created_at <= run.started_at <= run.finished_at
    assert runs[1].created_at <= runs[0].created_at  # the first run's times were not reset by the second
    assert manager.get("job-1").run_id == second.run_id
    assert manager.get(first.run_id).run_id == first.run_id
    code, listed = invoke("job", "list")
    assert code == 0 and first.run_id in listed and second.run_id in listed and listed.count("completed") == 2
    code, listed = invoke("job", "list", "--limit", "1")
    assert code == 0 and second.run_id in listed and first.run_id not in listed
    code, shown = invoke("job", "status", first.run_id)
    assert code == 0 and shown.startswith("job-1: completed") and f"run: {first.run_id}" in shown
    code, shown = invoke("job", "status", "job-1", "--json")
    assert code == 0 and json.loads(shown)["runId"] == second.run_id
    code, listed = invoke("job", "list", "--job", "job-1", "--json")
    assert [run["runId"] for run in json.loads(listed)] == [second.run_id, first.run_id]


def test_old_layout_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = JobStatus(id="old-job", state=JobState.COMPLETED, total_chunks=2, completed_chunks=2, progress=100)
    data = old.model_dump(by_alias=True, mode="json")
    del data["runId"]  # the first layout's JSON had no run id
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, data TEXT NOT NULL, created_at TEXT NOT NULL, "
            "cancel_requested INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("INSERT INTO jobs VALUES (?, ?, ?, 0)", ("old-job", json.dumps(data), old.created_at.isoformat()))
        db.execute("INSERT INTO jobs VALUES (?, ?, ?, 1)", ("broken", "{not json", utcnow().isoformat()))
    repository = SQLiteJobRepository(path)
    migrated = repository.get("old-job")
    assert migrated.state is JobState.COMPLETED and migrated.progress == 100 and migrated.run_id.startswith("run-")
    assert repository.get("broken").warnings == ["migrated from an unreadable record of the old layout"]
    assert repository.cancel_requested("broken") and not repository.cancel_requested("old-job")
    repository.save(JobStatus(id="old-job"))  # a new run of the old job
    again = SQLiteJobRepository(path)  # opening again: nothing left to migrate, nothing lost
    assert [run.id for run in again.runs("old-job")] == ["old-job", "old-job"]
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "jobs_v1"} <= tables and "jobs" not in tables


def _worker_env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        HELIOS_HOME=str(tmp_path / "home"),
        HELIOS_TEST_PROCESS_TAG=f"helios-runs-{uuid.uuid4().hex}",
        HELIOS_WORKER_RENDER="fakes.renders:frame_index_render",
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )


def test_a_run_killed_with_sigkill_shows_interrupted(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    env = _worker_env(tmp_path)
    env["HELIOS_FAKE_RENDER_SLEEP"] = "600"  # a chunk that runs until the test kills it
    env.pop("HELIOS_REPOSITORY", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--concurrency", "1", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        repository = SQLiteJobRepository(tmp_path / "home" / "jobs.db")
        deadline = time.monotonic() + 120
        while True:  # until the run says a chunk is running
            assert run.poll() is None and time.monotonic() < deadline
            if repository.exists("job-1"):
                status = repository.get("job-1")
                if status.state is JobState.RUNNING and any(c.state.value == "running" for c in status.chunks):
                    break
            time.sleep(0.05)
        assert JobManager(repository).get("job-1").state is JobState.RUNNING  # alive: running, not interrupted
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid, _ in tagged_processes(env["HELIOS_TEST_PROCESS_TAG"]):  # the killed run's orphaned workers
            os.kill(pid, signal.SIGKILL)
    assert repository.get("job-1").state is JobState.RUNNING  # what the dead owner last wrote
    code, shown = invoke("job", "status", "job-1", env={"HELIOS_HOME": env["HELIOS_HOME"]})
    assert code == 0 and shown.startswith("job-1: interrupted"), shown
    assert f"owner gone: pid {run.pid} on {this_host()}" in shown
    code, listed = invoke("job", "list", env={"HELIOS_HOME": env["HELIOS_HOME"]})
    assert "interrupted" in listed and "running" not in listed
    code, cancelled = invoke("job", "cancel", "job-1", env={"HELIOS_HOME": env["HELIOS_HOME"]})
    assert code == 0 and cancelled.strip() == "job-1: cancelled"


class SharedRepository(InMemoryJobRepository):
    """A plugin's repository: one in-memory store shared by every instance in this process."""

    instances = 0
    shared: InMemoryJobRepository | None = None

    def __new__(cls, *args: object, **kwargs: object) -> InMemoryJobRepository:  # type: ignore[misc]
        SharedRepository.instances += 1
        if SharedRepository.shared is None:
            SharedRepository.shared = InMemoryJobRepository()
        return SharedRepository.shared


class RepositoryPlugin:
    @hookimpl
    def register_repositories(self, register):  # type: ignore[no-untyped-def]
        register("shared-test", SharedRepository)


@pytest.fixture
def plugin_repository():  # type: ignore[no-untyped-def]
    reset_plugins()
    get_plugins().register_plugin(RepositoryPlugin(), name="test-repositories")
    SharedRepository.instances, SharedRepository.shared = 0, None
    yield SharedRepository
    reset_plugins()


def test_a_plugin_repository_is_used_by_every_job_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_repository: type[SharedRepository]
) -> None:
    for name, value in _worker_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    code, out = invoke("job", "run", str(job), "--quiet", "--concurrency", "1", "--repository", "shared-test")
    assert code == 0, out
    assert plugin_repository.instances == 1
    monkeypatch.setenv("HELIOS_REPOSITORY", "shared-test")
    code, listed = invoke("job", "list")
    (run,) = plugin_repository.shared.list()
    assert code == 0 and run.run_id in listed and "completed" in listed
    code, shown = invoke("job", "status", "job-1")
    assert code == 0 and shown.startswith("job-1: completed")
    code, shown = invoke("job", "cancel", run.run_id)
    assert code == 0 and shown.strip() == f"{run.run_id}: completed"
    assert plugin_repository.instances == 4
    assert not (tmp_path / "home" / "jobs.db").exists()  # the default SQLite was never opened
    monkeypatch.delenv("HELIOS_REPOSITORY")
    result = CliRunner().invoke(cli, ["job", "list", "--repository", "nope"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "error: unknown repository 'nope'; known: memory, shared-test, sqlite"
    ]


def test_a_detached_run_is_one_run(tmp_path: Path) -> None:
    """--detach records the run and the background process goes on with that same run (not a second one)."""
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    env = _worker_env(tmp_path)
    env.pop("HELIOS_REPOSITORY", None)
    started = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split(" as run ", 1)[1].split(" ", 1)[0]
    repository = SQLiteJobRepository(tmp_path / "home" / "jobs.db")
    deadline = time.monotonic() + 120
    while (state := repository.get(run_id).state) is not JobState.COMPLETED:  # one read per look
        assert time.monotonic() < deadline and state.active, repository.get(run_id)
        time.sleep(0.1)
    (run,) = repository.runs("job-1")
    assert run.run_id == run_id and run.created_at <= run.started_at <= run.finished_at


def gated_render(config, *, start_frame: int, **kwargs):  # type: ignore[no-untyped-def]
    """A worker's stand-in render that starts only once the test opens its gate (a file named after the
    chunk's first frame in $HELIOS_TEST_GATE), then renders the frame-index video."""
    from fakes.renders import frame_index_render

    gate = Path(os.environ["HELIOS_TEST_GATE"]) / str(start_frame)
    while not gate.exists():
        time.sleep(0.02)
    return frame_index_render(config, start_frame=start_frame, **kwargs)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), min_size=1, max_size=8))
def test_keys_resolve_alike_in_memory_and_in_sqlite(runs: list[tuple[str, int]]) -> None:
    """A run id names that run; a job id its newest run (by createdAt, ties: the later saved); deleting a job
    id removes all its runs. Property-tested against both built-in repositories."""
    import tempfile
    from datetime import timedelta

    base = utcnow()
    records = [JobStatus(id=job, created_at=base + timedelta(seconds=second)) for job, second in runs]
    with tempfile.TemporaryDirectory() as folder:
        for repository in (InMemoryJobRepository(), SQLiteJobRepository(Path(folder) / "jobs.db")):
            for record in records:
                repository.save(record)
            for record in records:
                assert repository.get(record.run_id).run_id == record.run_id
            for job in {job for job, _ in runs}:
                mine = [r for r in records if r.id == job]
                expected = sorted(reversed(mine), key=lambda r: r.created_at, reverse=True)
                assert repository.get(job).run_id == expected[0].run_id
                assert [r.run_id for r in repository.runs(job)] == [r.run_id for r in expected]
            gone = runs[0][0]
            repository.delete(gone)
            assert not repository.exists(gone) and len(repository.list()) == sum(1 for r in records if r.id != gone)
            repository.close()


def test_a_run_on_another_host_is_judged_by_its_heartbeat() -> None:
    """Another host's pid means nothing here: its run is interrupted only when its heartbeat is stale."""
    from datetime import timedelta

    from helios_kit.liveness import STALE_AFTER_S, observe

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = utcnow()
    fresh = JobStatus(id="far", state=JobState.RUNNING, pid=int(gone.stdout), host="render-box-7", heartbeat_at=now)
    assert observe(fresh.model_copy(), now).state is JobState.RUNNING
    stale_at = now + timedelta(seconds=STALE_AFTER_S + 1)
    assert observe(fresh.model_copy(), stale_at).state is JobState.INTERRUPTED
    assert observe(fresh.model_copy(), stale_at).finished_at == now  # its last sign of life
    here = fresh.model_copy(update={"host": this_host()})
    assert observe(here, now).state is JobState.INTERRUPTED  # this host, pid gone: at once
    done = fresh.model_copy(update={"state": JobState.COMPLETED})
    assert observe(done, stale_at).state is JobState.COMPLETED
    repository = InMemoryJobRepository()
    repository.save(fresh)
    assert JobManager(repository).cancel("far").state is JobState.RUNNING  # alive elsewhere: asked, not marked
    assert repository.cancel_requested("far")


@pytest.mark.parametrize("backend, told", [("lambda", True), ("local", False)])
def test_cancelling_a_run_whose_client_is_gone_tells_its_remote_workers(
    tmp_path: Path, backend: str, told: bool
) -> None:
    """Nobody is left to write the job's cancel marker when the client died: `helios job cancel` writes it in
    the run's store, so Lambda / Cloud Run / Dask workers still rendering stop between frames."""
    from helios_kit.cancel_marker import marker_present
    from helios_kit.store import ArtifactStore

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store = tmp_path / "store"
    store.mkdir()
    run = JobStatus(
        id="far",
        state=JobState.RUNNING,
        pid=int(gone.stdout),
        host=this_host(),
        heartbeat_at=utcnow(),
        backend=backend,
        store=str(store),
    )
    repository = InMemoryJobRepository()
    repository.save(run)
    assert JobManager(repository).cancel("far").state is JobState.CANCELLED
    assert marker_present(ArtifactStore(str(store)), "far") is told
