"""The dashboard as a person uses it, in a real Chromium driven by Playwright (the system browser, no
download): `helios dashboard` in its own process over a SQLite repository holding one real tiny run
(Chromium + ffmpeg: thumbnails and a playable preview) and one live run the test plays the owner of; the
runs list, the chunk grid updating without a reload, cancel from the page, and a cross-origin POST refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fakes.jobs import make_job, tagged_processes
from fakes.waiting import wait_for

from helios_kit.manager import JobManager
from helios_kit.render.browser import find_browser
from helios_kit.repository import ChunkState, ChunkStatus, JobState, JobStatus, SQLiteJobRepository, this_host, utcnow
from helios_kit.run import RunOptions

pytestmark = pytest.mark.render
REPO = Path(__file__).resolve().parent.parent
#: Generous bounds for waits on the page (they end as soon as the page shows the state; a hang fails).
WAIT_MS = 60_000


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, SQLiteJobRepository]]:
    db = tmp_path / "home" / "jobs.db"
    repository = SQLiteJobRepository(db)
    env = dict(os.environ, HELIOS_HOME=str(db.parent))
    env.pop("HELIOS_REPOSITORY", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "dashboard", "--port", "0", "--repository", f"sqlite:{db}"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        yield line.split(" ", 1)[1].strip(), repository
    finally:
        server.terminate()
        server.wait(30)


#: A tiny composition whose stills differ by chunk (a hue and the frame number).
COLOURS_HTML = """<!doctype html><html><body style="margin:0"><div id="b" style="width:100vw;height:100vh;
display:flex;align-items:center;justify-content:center;font:bold 28px sans-serif;color:#fff"></div><script>
function paint() { const n = Math.round(performance.now() * 30 / 1000);
  b.style.background = `hsl(${210 + n * 40}, 70%, 45%)`; b.textContent = `frame ${n}`; requestAnimationFrame(paint); }
paint();</script></body></html>"""


def real_run(tmp_path: Path, repository: SQLiteJobRepository, monkeypatch: pytest.MonkeyPatch) -> JobStatus:
    monkeypatch.delenv("HELIOS_WORKER_RENDER", raising=False)
    job = make_job(tmp_path / "job", frames=6, chunks=2, job_id="tiny", html=COLOURS_HTML)
    manager = JobManager(repository)
    final = manager.run(manager.create(job, backend="local", options=RunOptions(concurrency=1)).id)
    assert final.state is JobState.COMPLETED, final.error
    return final


def live_run(real: JobStatus) -> JobStatus:
    """A run this test owns (its pid, this host, a fresh heartbeat): one chunk per grid state."""
    now = utcnow()
    status = JobStatus(
        id="live-job",
        state=JobState.RUNNING,
        pid=os.getpid(),
        host=this_host(),
        created_at=now,
        started_at=now - timedelta(seconds=4),
        heartbeat_at=now,
        total_chunks=6,
        total_frames=60,
        done_frames=10,
        rendered_frames=10,
        chunks=[ChunkStatus(id=i, frames=10) for i in range(6)],
    )
    first, running, retrying, failed, _, _ = status.chunks
    first.state, first.attempts, first.output_file = ChunkState.RENDERED, 1, real.chunks[0].output_file
    first.duration_ms, first.worker = 1500.0, f"local@{this_host()}"
    running.state, running.attempts = ChunkState.RUNNING, 1
    retrying.state, retrying.attempts, retrying.retrying = ChunkState.RUNNING, 2, True
    retrying.log_tail = ["attempt 1: worker exited with signal 9"]
    failed.state, failed.attempts, failed.error = ChunkState.FAILED, 3, "chunk 3 failed after 3 attempts: boom"
    failed.log_tail = ["attempt 1: boom", "attempt 2: boom", "attempt 3: boom"]
    return status


def test_dashboard_in_chromium(
    tmp_path: Path, dashboard: tuple[str, SQLiteJobRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import sync_playwright

    url, repository = dashboard
    real = real_run(tmp_path, repository, monkeypatch)
    live = live_run(real)
    repository.save(live)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(find_browser().path), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.set_default_timeout(WAIT_MS)
            _runs_list(page, url, live, real)
            _live_grid_and_cancel(page, url, live, repository, tmp_path, real)
            _finished_run_page(page, url, real)
            _cross_origin_post_refused(browser, url, live, repository)
        finally:
            browser.close()


def _runs_list(page, url: str, live: JobStatus, real: JobStatus) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.wait_for_selector(f'tr[data-run="{live.run_id}"]')
    assert page.inner_text(f'tr[data-run="{live.run_id}"] .state') == "running"
    assert page.inner_text(f'tr[data-run="{real.run_id}"] .state') == "completed"
    page.click(f'tr[data-run="{live.run_id}"]')
    page.wait_for_url(f"{url}runs/{live.run_id}")


def _states(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#grid [data-chunk]", "cells => cells.map(c => c.dataset.state)")


def _live_grid_and_cancel(page, url, live: JobStatus, repository, tmp_path: Path, real: JobStatus) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector('#grid [data-chunk="5"]')
    assert _states(page) == ["done", "running", "retrying", "failed", "pending", "pending"]
    assert "attempt 3: boom" in page.inner_text('[data-error-chunk="3"]')
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-chunk=\"0\"] img'); return i && i.naturalWidth > 0; }"
    )
    page.evaluate("() => { window.__sameDocument = true; }")
    live.chunks[1].state, live.chunks[4].state = ChunkState.RENDERED, ChunkState.RUNNING
    live.chunks[1].output_file, live.chunks[1].duration_ms = real.chunks[1].output_file, 1800.0
    live.completed_chunks, live.progress, live.heartbeat_at = 2, 33.3, utcnow()
    repository.save(live)  # what the run's owner writes as it goes
    page.wait_for_function("() => document.querySelector('[data-chunk=\"4\"]').dataset.state === 'running'")
    assert _states(page) == ["done", "done", "retrying", "failed", "running", "pending"]
    assert page.inner_text("#run-progress").startswith("33.3%")
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].filter(i => i.naturalWidth).length == 2")
    shot = Path(os.environ.get("HELIOS_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
    page.screenshot(path=str(shot), full_page=True)
    page.click("#cancel")
    wait_for(lambda: repository.cancel_requested(live.run_id), WAIT_MS / 1000, "the cancel reached the repository")
    page.wait_for_function("() => document.querySelector('#cancel').textContent === 'Cancel requested'")
    live.state, live.error, live.finished_at = JobState.CANCELLED, "cancelled", utcnow()
    repository.save(live)  # the owner saw the flag and stopped
    page.wait_for_function("() => document.querySelector('#run-state').textContent === 'cancelled'")
    assert page.evaluate("() => window.__sameDocument") is True  # every change arrived without a reload
    assert page.is_disabled("#cancel")


def _finished_run_page(page, url: str, real: JobStatus) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{url}runs/{real.run_id}")
    page.wait_for_selector('#grid [data-chunk="1"]')
    assert _states(page) == ["done", "done"]
    page.wait_for_function("() => [...document.querySelectorAll('#grid img')].filter(i => i.naturalWidth).length == 2")
    page.wait_for_function("() => { const v = document.querySelector('#preview'); return v.readyState >= 1; }")
    duration = page.evaluate("() => document.querySelector('#preview').duration")
    assert duration == pytest.approx(6 / 30, abs=0.05)
    page.evaluate("() => { const v = document.querySelector('#preview'); v.currentTime = 0.1; }")
    page.wait_for_function(
        "() => { const v = document.querySelector('#preview'); return !v.seeking && v.readyState >= 2; }"
    )
    assert page.is_disabled("#cancel")


def _cross_origin_post_refused(browser, url: str, live: JobStatus, repository) -> None:  # type: ignore[no-untyped-def]
    """A page of another origin (localhost vs 127.0.0.1) posting to cancel: refused, nothing recorded."""
    repository.set_cancel_requested(live.run_id, False)
    other = browser.new_page()
    other.goto(url.replace("127.0.0.1", "localhost"))
    target = f"{url}api/runs/{live.run_id}/cancel"
    outcome = other.evaluate(
        """async (target) => {
            const simple = await fetch(target, {method: "POST", mode: "no-cors"}).then(r => r.type, e => "error");
            const token = document.querySelector('meta[name="helios-token"]').content;
            const withToken = await fetch(target, {method: "POST", headers: {"X-Helios-Token": token}})
                .then(r => String(r.status), e => "blocked");
            const sameOrigin = await fetch(target.replace("127.0.0.1", "localhost"), {method: "POST"})
                .then(r => r.status);
            return [simple, withToken, sameOrigin];
        }""",
        target,
    )
    assert outcome == ["opaque", "blocked", 403], outcome  # no token on the page's own origin either
    assert not repository.cancel_requested(live.run_id)


def test_a_real_run_updates_its_page_and_is_cancelled_from_it(
    tmp_path: Path, dashboard: tuple[str, SQLiteJobRepository]
) -> None:
    """`helios job run` in its own process (stand-in render, gated per chunk by the test): its page shows
    chunk 0 finish and chunk 1 start without a reload; Cancel on the page stops the run, which records it."""
    from playwright.sync_api import sync_playwright

    url, repository = dashboard
    job = make_job(tmp_path / "job", frames=9, chunks=3, job_id="gated")
    gate = tmp_path / "gate"
    gate.mkdir()
    env = dict(
        os.environ,
        HELIOS_HOME=str(repository.path.parent),
        HELIOS_TEST_GATE=str(gate),
        HELIOS_TEST_PROCESS_TAG=f"helios-dashboard-{os.getpid()}-{time.monotonic_ns()}",
        HELIOS_WORKER_RENDER="test_runs:gated_render",
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("HELIOS_REPOSITORY", None)
    argv = [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--concurrency", "1", "--quiet"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(find_browser().path), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(WAIT_MS)
                wait_for(lambda: repository.exists("gated"), WAIT_MS / 1000, "the run is recorded")
                page.goto(f"{url}runs/gated")  # a job id: its latest run
                page.wait_for_function(
                    "() => document.querySelector('[data-chunk=\"0\"]')?.dataset.state === 'running'"
                )
                assert _states(page) == ["running", "pending", "pending"]
                page.evaluate("() => { window.__sameDocument = true; }")
                (gate / "0").touch()  # chunk 0 may render now
                page.wait_for_function("() => document.querySelector('[data-chunk=\"1\"]').dataset.state === 'running'")
                assert _states(page) == ["done", "running", "pending"]
                page.wait_for_function("() => document.querySelector('[data-chunk=\"0\"] img')?.naturalWidth > 0")
                page.click("#cancel")
                page.wait_for_function("() => document.querySelector('#run-state').textContent === 'cancelled'")
                assert _states(page) == ["done", "cancelled", "cancelled"]
                assert page.evaluate("() => window.__sameDocument") is True
            finally:
                browser.close()
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 130, stderr
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid, _ in tagged_processes(env["HELIOS_TEST_PROCESS_TAG"]):
            os.kill(pid, signal.SIGKILL)
    final = repository.get("gated")
    assert final.state is JobState.CANCELLED and final.finished_at is not None
