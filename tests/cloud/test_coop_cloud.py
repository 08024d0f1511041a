"""Scale-out on shared stores, all on 127.0.0.1: two `helios job run` processes sharing an S3 store (moto)
split a job; the merge runs next to the store on the Lambda emulator's worker (the client fetches no chunk);
a straggling invocation gets a backup that wins; a no-op re-run on S3 reads the job's done index instead of
the manifests; a Dask worker that keeps failing is block-listed. Renders are fakes (tests/fakes), real ffmpeg."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fakes.cloudjobs import make_spec, upload_job
from fakes.lambda_emulator import LambdaEmulator
from fakes.renders import decode_frame_indexes
from helios_lambda.backend import LambdaBackend, LambdaOptions

from helios_kit.loaders import load_spec
from helios_kit.merging import MergeWhere
from helios_kit.protocol import ChunkState
from helios_kit.run import RunOptions, execute_job
from helios_kit.store import ArtifactStore
from helios_kit.stragglers import BackupPolicy

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def counting(worker_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Workers render with the counting fake; returns its log."""
    log = tmp_path / "renders.log"
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.counting:counting_render")
    monkeypatch.setenv("HELIOS_FAKE_RENDER_LOG", str(log))
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    return log


def render_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def frames_in_store(store: str, spec, tmp_path: Path) -> list[int]:
    local = ArtifactStore(store).fetch(spec.merge.output_file, tmp_path / "merged.mp4")
    return decode_frame_indexes(local, spec.config.width, spec.config.height)


def test_two_runners_share_an_s3_store(s3, counting: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_FAKE_RENDER_GATE", "2")  # a render waits until both runners render one
    spec = make_spec(frames=32, chunks=8, job_id="coop-s3")
    url = upload_job(spec, "s3://renders/jobs/coop")
    store = "s3://renders/out/coop"
    argv = [sys.executable, "-m", "helios_kit.cli", "job", "run", url, "--store", store, "--quiet", "-j", "2"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out + err
    lines = render_lines(counting)
    per_chunk = Counter(int(line[2]) for line in lines)
    assert sorted(per_chunk) == [chunk.start_frame for chunk in spec.chunks]
    assert set(per_chunk.values()) == {1}, f"a chunk rendered twice: {per_chunk}"
    assert {int(line[0]) for line in lines} == {proc.pid for proc in procs}
    assert frames_in_store(store, spec, tmp_path) == list(range(32))
    import fsspec

    assert not [name for name in fsspec.filesystem("s3").find("renders/out/coop") if ".lease-" in name]


def lambda_backend(emulator: LambdaEmulator) -> LambdaBackend:
    return LambdaBackend(
        LambdaOptions(function=emulator.function_name, endpoint_url=emulator.endpoint_url, region="us-east-1")
    )


def test_merge_runs_next_to_the_store(s3, counting: Path, tmp_path: Path, monkeypatch) -> None:
    spec = make_spec(frames=24, chunks=4, job_id="remote-merge")
    url = upload_job(spec, "s3://renders/jobs/merge")
    store = "s3://renders/out/merge"

    def no_fetch(self, rel: str, local_path: Path) -> Path:
        raise AssertionError(f"the client fetched {rel}")

    monkeypatch.setattr(ArtifactStore, "fetch", no_fetch)  # this process only; the handlers run elsewhere
    loaded, _job_dir = load_spec(url)
    with LambdaEmulator(workers=2) as emulator, lambda_backend(emulator) as backend:
        # no straggler backups: this counts invocations, and load can make a chunk straggle (a second attempt)
        no_backups = BackupPolicy(enabled=False)
        options = RunOptions(store=store, retry_delay=0.1, merge_where=MergeWhere.AUTO, backups=no_backups)
        report = execute_job(loaded, url, tmp_path, backend, options)
        invoked, merges = sorted(emulator.invoked_chunks), emulator.counts["merge"]
    assert report.ok, report.summary_line()
    assert report.merge is not None and report.merge.output == f"{store}/out.mp4"
    assert invoked == [0, 1, 2, 3] and merges == 1  # four chunks, then one merge invocation
    monkeypatch.undo()
    assert frames_in_store(store, spec, tmp_path) == list(range(24))


def test_remote_merge_refused_for_local_backend(tmp_path: Path) -> None:
    from fakes.cloudjobs import HTML

    from helios_kit.spec import dump

    (tmp_path / "index.html").write_text(HTML)
    dump(make_spec(frames=4, chunks=1, job_id="no-remote"), tmp_path / "job.json")
    proc = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(tmp_path / "job.json"), "--merge", "remote"],
        capture_output=True,
        text=True,
        env={**os.environ, "HELIOS_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode != 0
    assert "--merge remote: backend local cannot merge" in proc.stderr and "Traceback" not in proc.stderr


def test_straggler_gets_a_backup_that_wins(s3, counting: Path, tmp_path: Path) -> None:
    spec = make_spec(frames=16, chunks=8, job_id="straggler")
    url = upload_job(spec, "s3://renders/jobs/straggler")
    loaded, _job_dir = load_spec(url)
    slow_chunk = 5
    with LambdaEmulator(workers=2, first_delays={slow_chunk: 600.0}) as emulator, lambda_backend(emulator) as backend:
        options = RunOptions(
            store="s3://renders/out/straggler", retry_delay=0.1, backups=BackupPolicy(after=0.75, factor=1.5)
        )
        report = execute_job(loaded, url, tmp_path, backend, options)
        invoked = Counter(emulator.invoked_chunks)
        answered = emulator.counts["ok"]
    assert report.ok, report.summary_line()
    assert invoked[slow_chunk] == 2 and all(invoked[c.id] == 1 for c in spec.chunks if c.id != slow_chunk)
    assert answered == 8 + 1  # every chunk once, the merge; the straggling invocation never answered
    assert frames_in_store("s3://renders/out/straggler", spec, tmp_path) == list(range(16))


@pytest.mark.parametrize("lost", [set(), {3}], ids=["every-answer", "an-answer-lost"])
def test_noop_rerun_on_s3_reads_the_done_index_only(s3, counting: Path, tmp_path: Path, lost: set[int]) -> None:
    """A re-run of a finished job (merged next to the store) asks S3 for listings and its done index, which
    the first run wrote from its workers' results and what it read: no request per chunk. Also when a chunk's
    first invocation committed it and its answer was lost: the retry finds the chunk complete, and its
    `skipped` answer carries the manifest that vouched for it."""
    spec = make_spec(frames=16, chunks=8, job_id="noop-s3")
    url = upload_job(spec, "s3://renders/jobs/noop")
    store = "s3://renders/out/noop"
    loaded, _ = load_spec(url)
    # no backups in the first run: a straggler's backup that also commits rewrites a manifest after the client
    # took the other one (valid: the index then costs one GET for it), which is not what this test measures
    first = RunOptions(store=store, retry_delay=0.1, backups=BackupPolicy(enabled=False))
    with LambdaEmulator(workers=2, lost_answers=set(lost)) as emulator, lambda_backend(emulator) as backend:
        report = execute_job(loaded, url, tmp_path, backend, first)
        assert report.ok and emulator.counts["lost"] == len(lost)
        retried = {c.chunk_id: (c.state, c.attempts) for c in report.chunks if c.attempts > 1}
        assert retried == dict.fromkeys(lost, (ChunkState.RENDERED, 2))  # the retry's skip: the lost attempt's commit
        calls: Counter[str] = Counter()
        real = ArtifactStore.__init__

        keys: list[str] = []  # what was asked for, named in a failure with what the first run did
        first_run = f"first run: invocations {sorted(Counter(emulator.invoked_chunks).items())}, {emulator.counts}"

        def count(params, model, **_) -> None:
            if str(params.get("Key", params.get("Prefix", ""))).startswith("out/noop"):
                calls.update([model.name])
                keys.append(f"{model.name} {params.get('Key', params.get('Prefix'))}")

        def counting_init(self, *args, **kwargs) -> None:
            real(self, *args, **kwargs)
            if not self.is_local:
                self.fs.connect()
                self.fs.s3.meta.events.register("before-parameter-build.s3", count, unique_id="noop-count")

        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        ArtifactStore.__init__ = counting_init  # type: ignore[method-assign]
        try:
            loaded, _ = load_spec(url)
            report = execute_job(loaded, url, tmp_path, backend, RunOptions(store=store))
        finally:
            ArtifactStore.__init__ = real  # type: ignore[method-assign]
    assert report.ok and report.skipped == 8 and report.merge is not None and report.merge.skipped
    asked = f"{keys}; {first_run}"
    assert calls["GetObject"] == 1, asked  # the done index: it vouches for the 8 manifests and the merged output's
    assert calls["HeadObject"] == 0 and calls["PutObject"] == 0, asked  # index unchanged; store probed already
    assert calls["ListObjectsV2"] <= 4, asked  # the two folders, none per chunk


def test_dask_blocklists_a_worker_that_keeps_failing(worker_env, tmp_path: Path, monkeypatch) -> None:
    """Of two real `dask worker` processes, one fails every chunk (retryable): after --max-worker-failures
    it gets no more chunks of the job, and the job completes on the other, frame-exact."""
    import shutil

    from fakes.dask_cluster import DaskCluster
    from fakes.jobs import make_job

    log, pids = tmp_path / "renders.log", tmp_path / "fail-pids"
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.counting:failing_pid_render")
    monkeypatch.setenv("HELIOS_FAKE_RENDER_LOG", str(log))
    monkeypatch.setenv("HELIOS_FAKE_FAIL_PIDS", str(pids))
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    helios = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"
    job = make_job(tmp_path / "job", frames=16, chunks=8)
    with DaskCluster(2, logs=tmp_path / "dask-logs") as cluster:
        bad = cluster.worker_pids()[0]
        pids.write_text(str(bad))
        run = subprocess.run(
            [helios, "job", "run", str(job), "--backend", "dask", "--scheduler", cluster.address,
             "--resources", "chromium=1", "--max-worker-failures", "2", "--retries", "8", "--retry-delay", "0.1",
             "--concurrency", "2", "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = render_lines(log)
    failed = [line for line in lines if line[-1] == "failed"]
    good = [line for line in lines if line[-1] != "failed"]
    assert {int(line[1]) for line in failed} == {bad}
    assert 2 <= len(failed) <= 2 + 1, failed  # the failures that block-list it, and one already placed there
    assert "failed 2 chunks of this job; it gets no more of them" in run.stderr, run.stderr
    assert sorted(int(line[2]) for line in good) == list(range(0, 16, 2))
    assert all(int(line[1]) != bad for line in good)
    assert decode_frame_indexes(job.parent / "out.mp4", 160, 120) == list(range(16))


def test_s3_lease_is_a_conditional_create(s3) -> None:
    """On S3 the lease is taken with `If-None-Match: *`: of two holders only one gets a generation, an
    expired one is taken over by the next generation, and a finished holder leaves no lease behind."""
    from helios_kit.leases import LeaseHolder, LeaseStore

    store = ArtifactStore("s3://renders/leases")
    one = LeaseStore(store, LeaseHolder(run_id="one"), ttl=30)
    two = LeaseStore(store, LeaseHolder(run_id="two"), ttl=30)
    first = one.acquire("chunks/c.mp4")
    assert first is not None and first.generation == 0
    assert two.acquire("chunks/c.mp4") is None
    assert not two._create(two._path("chunks/c.mp4", 0), b"{}")  # the conditional PUT itself refuses
    expired = first.model_copy(update={"expires_at": first.expires_at.replace(year=2000)})
    store.fs.pipe_file(one._path("chunks/c.mp4", 0), expired.model_dump_json(by_alias=True).encode())
    taken = two.acquire("chunks/c.mp4")
    assert taken is not None and taken.generation == 1
    assert not one.renew(first)
    two.release(taken, done=True)
    store.refresh()
    assert len(store.fs.find("renders/leases")) == 2  # on S3 the deletes wait for the run's batch (flush)
    two.flush()
    store.refresh()
    assert store.fs.find("renders/leases") == []
