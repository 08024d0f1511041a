"""wait_exit: a child's exit is seen as it happens (a pidfd, not Popen.wait's doubling sleeps), with a timeout."""

from __future__ import annotations

import os
import resource
import subprocess
import time

import pytest

from helios_kit.render.browser import wait_exit


def _waiting_child() -> subprocess.Popen[bytes]:
    """A child that exits with 7 once its stdin closes."""
    return subprocess.Popen(["sh", "-c", "read line; exit 7"], stdin=subprocess.PIPE)


def _no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    def sleep(seconds: float) -> None:
        raise AssertionError(f"polled: slept {seconds} s")

    monkeypatch.setattr(time, "sleep", sleep)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")
def test_exit_is_seen_without_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    child = _waiting_child()
    _no_sleeping(monkeypatch)
    assert child.stdin is not None
    child.stdin.close()
    assert wait_exit(child, 60) == 7
    assert wait_exit(child, 60) == 7  # already reaped: the same status


def test_a_running_child_times_out_then_is_reaped_when_killed() -> None:
    child = _waiting_child()
    with pytest.raises(subprocess.TimeoutExpired):
        wait_exit(child, 0.05)
    assert child.poll() is None
    child.kill()
    assert wait_exit(child, 60) == -9
    assert child.stdin is not None
    child.stdin.close()


def test_without_pidfd_it_is_popen_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    child = _waiting_child()
    assert child.stdin is not None
    child.stdin.close()
    assert wait_exit(child, 60) == 7


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")
def test_a_process_with_over_1024_descriptors_open_still_waits() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"cannot open 1100 descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the pidfd is numbered past 1024
    try:
        child = _waiting_child()
        assert child.stdin is not None
        child.stdin.close()
        assert wait_exit(child, 60) == 7
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
