"""`helios job run` end to end with real Chromium and ffmpeg: frame-exact merge, incremental re-runs,
resume after kill -9, failures, timeouts, cancel from another terminal, and no orphan processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fakes.jobs import make_job, tagged_processes, wait_no_tagged_processes
from fakes.loopback import LoopbackHTTPServer
from fakes.renders import decode_frame_indexes

from helios_kit.repository import JobState, SQLiteJobRepository

W, H = 160, 120


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tag = f"helios-jobrun-{uuid.uuid4().hex}"
    environment = dict(os.environ, HELIOS_TEST_PROCESS_TAG=tag, HELIOS_HOME=str(tmp_path / "home"))
    environment.pop("HELIOS_WORKER_RENDER", None)
    return environment


def helios(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_no_orphans(env: dict[str, str]) -> None:
    assert wait_no_tagged_processes(env["HELIOS_TEST_PROCESS_TAG"], timeout=60) == []


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.render
def test_incremental_runs_are_frame_exact(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=40, chunks=4)
    out = tmp_path / "job" / "out.mp4"
    first = helios("job", "run", str(job), "--concurrency", "2", env=env)
    assert first.returncode == 0, first.stderr
    expected = f"4 chunks: 4 rendered, 0 skipped (complete), 0 failed; merged → {out} (40 frames, 1.333 s)"
    assert last_line(first) == expected
    assert decode_frame_indexes(out, W, H) == list(range(40))
    assert_no_orphans(env)

    chunks = sorted((tmp_path / "job" / "chunks").glob("chunk-*.mp4"))
    stamps = [c.stat().st_mtime_ns for c in chunks] + [out.stat().st_mtime_ns]
    again = helios("job", "run", str(job), env=env)
    assert again.returncode == 0 and last_line(again).startswith("4 chunks: 0 rendered, 4 skipped (complete), 0 failed")
    assert [c.stat().st_mtime_ns for c in chunks] + [out.stat().st_mtime_ns] == stamps  # nothing rewritten

    (tmp_path / "job" / "chunks" / "chunk-0001.mp4").unlink()
    one = helios("job", "run", str(job), env=env)
    assert last_line(one).startswith("4 chunks: 1 rendered, 3 skipped (complete), 0 failed; merged")
    assert decode_frame_indexes(out, W, H) == list(range(40))

    html = tmp_path / "job" / "index.html"
    html.write_text(html.read_text() + "\n<!-- touched -->\n")
    everything = helios("job", "run", str(job), "--concurrency", "2", env=env)
    assert last_line(everything).startswith("4 chunks: 4 rendered, 0 skipped (complete), 0 failed; merged")
    assert decode_frame_indexes(out, W, H) == list(range(40))
    status = SQLiteJobRepository(tmp_path / "home" / "jobs.db").get("job-1")
    assert status.state is JobState.COMPLETED and status.result.frames == 40
    assert_no_orphans(env)


@pytest.mark.render
def test_kill_9_mid_chunk_then_resume(tmp_path: Path, env: dict[str, str]) -> None:
    # 250 frames a chunk (about a second each even when fast), so the kill below always lands inside chunk 1;
    # short leases, so the resumed run takes over the killed run's lease on chunk 1 within seconds.
    job = make_job(tmp_path / "job", frames=1000, chunks=4)  # frame numbers drawn in 10 bits
    env = {**env, "HELIOS_LEASE_TTL": "3"}
    chunks = tmp_path / "job" / "chunks"
    run = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--concurrency", "1", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (chunks / "chunk-0000.mp4.done.json").exists():
            assert run.poll() is None and time.monotonic() < deadline, "chunk 0 never completed"
            time.sleep(0.05)
        # chunk 1 is leased once its render starts: kill the run without warning in the middle of it
        while not list(chunks.glob("chunk-0001.mp4.lease-*")):
            assert run.poll() is None and time.monotonic() < deadline, "chunk 1 never started"
            time.sleep(0.02)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
    assert_no_orphans(env)  # the workers die with their supervisor, and take Chromium and ffmpeg along
    done = sorted(p.name for p in chunks.glob("*.done.json"))
    assert "chunk-0000.mp4.done.json" in done and len(done) < 4
    assert not list((tmp_path / "job").glob("out.mp4*"))
    resumed = helios("job", "run", str(job), "--concurrency", "2", env=env)
    assert resumed.returncode == 0, resumed.stderr
    summary = f"4 chunks: {4 - len(done)} rendered, {len(done)} skipped (complete), 0 failed"
    assert last_line(resumed).startswith(summary)
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", W, H) == list(range(1000))
    assert_no_orphans(env)


@pytest.mark.render
def test_failure_and_timeout_leave_no_processes(tmp_path: Path, env: dict[str, str]) -> None:
    # a composition that is never ready: every attempt runs into the chunk timeout, however fast renders get
    never_ready = '<body><script>window.helios.delayRender("never ready");</script></body>'
    job = make_job(tmp_path / "job", frames=8, chunks=2, html=never_ready)
    timed = helios("job", "run", str(job), "--chunk-timeout", "0.4", "--retries", "1", "--retry-delay", "0.05", env=env)
    assert timed.returncode == 1
    assert "error: chunk 0 failed after 2 attempts: timed out after 0.4 s" in timed.stderr
    assert "2 chunks: 0 rendered, 0 skipped (complete), 2 failed; not merged" in last_line(timed)
    assert_no_orphans(env)

    broken = make_job(tmp_path / "broken", frames=8, chunks=2, html="<body>ok</body>")
    (tmp_path / "broken" / "index.html").unlink()  # the composition is gone: not retryable
    failed = helios("job", "run", str(broken), "--retries", "3", env=env)
    assert failed.returncode == 1
    assert "error: chunk 0 failed after 1 attempt:" in failed.stderr
    assert "2 failed" in last_line(failed)
    status = SQLiteJobRepository(tmp_path / "home" / "jobs.db").get("job-1")
    assert status.state is JobState.FAILED and status.error.startswith("chunk 0 failed after 1 attempt")
    assert_no_orphans(env)


@pytest.mark.render
@pytest.mark.parametrize("how", ["helios job cancel", "SIGINT", "SIGTERM"])
def test_cancel_from_another_terminal_or_a_signal(tmp_path: Path, env: dict[str, str], how: str) -> None:
    # Long enough that the cancel always lands while chunks render: 600 frames at 160x120 took 2.6 s whole
    # here, and under the load of five suites at once one run finished before `helios job cancel` (a fresh
    # process) had started, and exited 0. 18,000 frames are minutes of work; the cancel stops them in seconds.
    job = make_job(tmp_path / "job", frames=18_000, chunks=6)
    run = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--concurrency", "2", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any("chrom" in cmd for _, cmd in tagged_processes(env["HELIOS_TEST_PROCESS_TAG"])):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        if how == "helios job cancel":
            cancel = helios("job", "cancel", "job-1", env=env)
            assert cancel.returncode == 0 and "cancel requested" in cancel.stdout
        else:
            run.send_signal(getattr(signal, how))
        # No time bound (the suite runs on loaded machines): the exit code, the last line and the record
        # below say the run stopped because it was cancelled, not because its 18,000 frames were done.
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr
    assert "job cancelled" in stdout.strip().splitlines()[-1]
    status = SQLiteJobRepository(tmp_path / "home" / "jobs.db").get("job-1")
    assert status.state is JobState.CANCELLED
    assert_no_orphans(env)
    if how != "helios job cancel":
        return
    shown = helios("job", "status", "job-1", env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("job-1: cancelled")
    listed = helios("job", "list", env=env)
    assert "job-1" in listed.stdout and "cancelled" in listed.stdout


def test_user_errors_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    cases = {
        ("job", "run", str(job), "--backend", "nope"): "error: unknown backend 'nope'; known: ",
        ("job", "run", str(job), "--function", "f"): "error: --function is an option of backend lambda, not of 'local'",
        ("job", "run", str(job), "--chunks", "1,5"): "error: unknown chunk id 5: job job-1 has ids 0-1",
        ("job", "run", str(job), "--chunks", "x"): "error: --chunks: 'x' is not a chunk id or a range like 5-7",
        ("job", "status", "ghost"): "error: no job with id 'ghost' (see `helios job list`)",
        ("job", "cancel", "ghost"): "error: no job with id 'ghost' (see `helios job list`)",
        ("job", "run", str(tmp_path / "missing.json")): "error: job file not found: ",
    }
    for args, expected in cases.items():
        result = helios(*args, env=env)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (args, result.stderr)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = helios("job", "run", str(job), "--store", str(blocker / "store"), env=env)
    assert result.returncode != 0 and "is not writable" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def fake_render_env(env: dict[str, str]) -> dict[str, str]:
    tests = str(Path(__file__).parent)
    return dict(
        env,
        HELIOS_WORKER_RENDER="fakes.renders:frame_index_render",
        PYTHONPATH=os.pathsep.join([tests, env.get("PYTHONPATH", "")]),
    )


def test_http_job_runs_in_the_current_folder(tmp_path: Path, fake_render_env: dict[str, str]) -> None:
    import functools
    import http.server
    import threading

    make_job(tmp_path / "served", frames=12, chunks=3)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    here = tmp_path / "here"
    here.mkdir()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/job.json"
        result = subprocess.run(
            [sys.executable, "-m", "helios_kit.cli", "job", "run", url],
            cwd=here,
            env=fake_render_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert last_line(result).endswith(f"merged → {here / 'out.mp4'} (12 frames, 0.400 s)")
        assert decode_frame_indexes(here / "out.mp4", W, H) == list(range(12))
        assert not (tmp_path / "served" / "chunks").exists()
        # nothing local: the composition resolves relative to the job's URL, and the run says so
        base = url.rsplit("/", 1)[0]
        assert result.stderr.splitlines()[:2] == [
            f"Fetching job spec from {url}",
            f"composition: {base}/index.html (relative to the job URL)",
        ]
        # the composition in the current directory (the job dir of a URL job) is used when it is there
        (tmp_path / "served" / "index.html").rename(here / "index.html")
        local = subprocess.run(
            [sys.executable, "-m", "helios_kit.cli", "job", "run", url, "--force"],
            cwd=here,
            env=fake_render_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert local.returncode == 0, local.stderr
        assert f"composition: index.html (current directory {here})" in local.stderr.splitlines()
        assert decode_frame_indexes(here / "out.mp4", W, H) == list(range(12))
    finally:
        server.shutdown()
        server.server_close()


def test_detach_returns_at_once_and_the_job_completes(tmp_path: Path, fake_render_env: dict[str, str]) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    env = dict(fake_render_env, HELIOS_FAKE_RENDER_SLEEP="0.5")
    result = helios("job", "run", str(job), "--detach", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job-1: started in the background")
    repository = SQLiteJobRepository(tmp_path / "home" / "jobs.db")
    deadline = time.monotonic() + 60
    while repository.get("job-1").state is not JobState.COMPLETED:
        assert time.monotonic() < deadline, repository.get("job-1")
        time.sleep(0.1)
    assert decode_frame_indexes(tmp_path / "job" / "out.mp4", W, H) == list(range(12))
    assert_no_orphans(env)


def test_progress_bar_on_a_tty(tmp_path: Path, fake_render_env: dict[str, str]) -> None:
    """With a terminal on stderr the rich progress bar draws, and the run still ends (no output feedback loop)."""
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    leader, follower = os.openpty()
    run = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=dict(fake_render_env, COLUMNS="100"),
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                block = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not block:
                break
            output += block
        run.wait(10)
    finally:
        if run.poll() is None:
            run.kill()
        os.close(leader)
    text = output.decode(errors="replace")
    assert run.returncode == 0, text[-2000:]
    assert "12/12" in text and "frames/s" in text
    assert "3 chunks: 3 rendered, 0 skipped (complete), 0 failed; merged" in text
    assert len(output) < 200_000
