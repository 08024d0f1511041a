"""A Chromium that dies at launch fails the render retryably, with why it died in the message; the stderr it
wrote goes with its profile (helios_kit/render/browser.py Browser)."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from fakes.jobs import FRAME_INDEX_HTML
from fakes.renders import decode_frame_indexes

from helios_kit.errors import BrowserFault
from helios_kit.render import render_range
from helios_kit.render.browser import Browser, BrowserExecutable, find_browser, wait_exit
from helios_kit.spec import RenderConfig


def _dying_chromium(folder: pathlib.Path, said: str, status: int) -> pathlib.Path:
    script = folder / "chromium-headless-shell"
    script.write_text(f"#!/bin/sh\necho 'starting' >&2\necho '{said}' >&2\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_browser_that_exits_at_launch_is_a_retryable_fault_that_says_why(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chromium = _dying_chromium(tmp_path, "FATAL: cannot map shared memory", 3)
    profiles: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(**kw: str) -> str:
        made = real_mkdtemp(**kw)
        if kw.get("prefix") == "helios-chromium-":
            profiles.append(made)
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(BrowserFault) as raised:
        Browser(BrowserExecutable(str(chromium), headless_shell=True))
    message = str(raised.value)
    assert "did not start" in message and str(chromium) in message
    assert "exit status 3" in message and "FATAL: cannot map shared memory" in message
    assert raised.value.retryable
    assert len(profiles) == 1 and not pathlib.Path(profiles[0]).exists()  # its profile and stderr log are gone


@pytest.mark.render
def test_a_render_whose_first_browser_dies_at_launch_renders_in_the_next(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = find_browser()
    dying = BrowserExecutable(str(_dying_chromium(tmp_path, "crashed", 134)), headless_shell=True)
    launches: list[str] = []
    original_init = Browser.__init__

    def launch(self: Browser, executable: BrowserExecutable | None = None, *args: object, **kw: object) -> None:
        launches.append("dying" if not launches else "real")
        original_init(self, dying if len(launches) == 1 else real, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Browser, "__init__", launch)
    (tmp_path / "index.html").write_text(FRAME_INDEX_HTML)
    out = tmp_path / "out.mp4"
    render_range(
        RenderConfig(input="index.html", width=160, height=120, fps=30, frame_count=6),
        input_location=str(tmp_path / "index.html"),
        start_frame=0,
        frame_count=6,
        output_path=out,
    )
    assert launches == ["dying", "real"]
    assert decode_frame_indexes(out, 160, 120) == list(range(6))


#: Run in a fresh interpreter: fd 3 is taken while the launch makes its pipes (so they land at 4 and up)
#: and is free again when Chromium is forked, as when another thread closes a file meanwhile.
_LAUNCH_WITH_FD_3_FREE = """
import os
import subprocess
from helios_kit.render.browser import Browser, find_browser

placeholder = os.open(os.devnull, os.O_RDONLY)
assert placeholder == 3, placeholder
real_popen, real_pipe = subprocess.Popen, os.pipe


def popen_with_fd_3_free(*args, **kwargs):
    def pipe_then_free_fd_3():  # Popen's own pipe (its exec-error channel), made just before the fork
        made = real_pipe()
        os.close(placeholder)
        os.pipe = real_pipe
        return made

    os.pipe = pipe_then_free_fd_3
    return real_popen(*args, **kwargs)


subprocess.Popen = popen_with_fd_3_free
with Browser(find_browser(), begin_frame_control=True) as browser:
    print(browser.version["product"])
"""


@pytest.mark.render
def test_a_browser_launches_when_fd_3_is_free_at_fork_time(tmp_path: pathlib.Path) -> None:
    """The CDP pipe ends reach Chromium as fds 3 and 4 whatever numbers they had: a copy of one made with
    os.dup could land on the free fd 3 close-on-exec, and Chromium then started without its pipe."""
    script = tmp_path / "launch.py"
    script.write_text(_LAUNCH_WITH_FD_3_FREE)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False, close_fds=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Chrome" in done.stdout


def _until_thread_gone(native_id: int) -> None:
    """Until the OS thread has exited (Python's join returns a moment before): the kernel sends
    PR_SET_PDEATHSIG in that exit, and offers no event to wait on, so its /proc entry is watched."""
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/self/task/{native_id}") and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.render
def test_a_browser_outlives_the_thread_that_launched_it() -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked a child exits: a browser launched from a
    short-lived thread (a pool thread keeping a WarmBrowser for later renders) was killed with it. Every
    child is forked on one long-lived thread (browser.spawn), so the browser keeps answering."""
    launched: list[Browser] = []
    native_ids: list[int] = []

    def launch() -> None:
        native_ids.append(threading.get_native_id())
        launched.append(Browser(find_browser(), begin_frame_control=True))

    thread = threading.Thread(target=launch)
    thread.start()
    thread.join()
    _until_thread_gone(native_ids[0])
    with launched[0] as browser:
        # A killed browser is reaped within milliseconds of the thread's exit (-9); this one must not end at
        # all, so the wait running out is the pass.
        with pytest.raises(subprocess.TimeoutExpired):
            wait_exit(browser.process, 1.0)
        assert browser.new_page(64, 64).evaluate("1 + 1") == 2
