"""Where one render's wall time goes: per-phase totals, switched on by ``HELIOS_PROFILE=1``.

The session gives each render a :class:`Profiler`; the capture (page step, capture call, base64 decode),
the encoder (waiting for room in the queue, writing to ffmpeg's stdin, ffmpeg's tail after the last frame)
and the session itself (browser launch + page load, fast-forward, encoder start) add their time to it. With
``HELIOS_PROFILE`` unset every call is a no-op (:data:`NULL_PROFILER`). The totals travel as a
:class:`RenderProfile` in the render's stats and are printed to stderr, one line per phase, when the render
ends. Phases on other threads (the ffmpeg writer) overlap the capture loop, so they do not add up to the wall.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator

from pydantic import BaseModel


class PhaseTotal(BaseModel):
    """One phase: total milliseconds over `count` calls."""

    name: str
    ms: float
    count: int


class RenderProfile(BaseModel):
    """The phases of one render, in the order they were first seen, and its wall time."""

    frames: int
    wall_ms: float
    phases: list[PhaseTotal]

    def lines(self) -> list[str]:
        """Human lines: per phase total ms, ms per frame (per call for one-off phases) and share of wall."""
        frames = max(self.frames, 1)
        rate = self.frames / self.wall_ms * 1000 if self.wall_ms else 0.0
        out = [f"profile: {self.frames} frames in {self.wall_ms:.0f} ms ({rate:.1f} frames/s)"]
        for phase in self.phases:
            per = phase.ms / frames if phase.count >= frames else phase.ms / max(phase.count, 1)
            unit = "/frame" if phase.count >= frames else "/call "
            share = phase.ms / self.wall_ms * 100 if self.wall_ms else 0.0
            out.append(f"  {phase.name:22s} {phase.ms:9.1f} ms {per:8.2f} ms{unit} {share:5.1f}%  x{phase.count}")
        return out


def enabled() -> bool:
    """HELIOS_PROFILE set to anything but '' or '0'."""
    return os.environ.get("HELIOS_PROFILE", "") not in ("", "0")


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Profiler:
    """Thread-safe accumulator of phase durations."""

    active = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {}
        self._started = time.perf_counter()
        self._self_cpu = _self_cpu_s()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            total = self._totals.setdefault(name, [0.0, 0])
            total[0] += seconds * 1000
            total[1] += 1

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def report(self, frames: int) -> RenderProfile:
        self.add("cpu: this process", _self_cpu_s() - self._self_cpu)
        wall = (time.perf_counter() - self._started) * 1000
        with self._lock:
            phases = [PhaseTotal(name=name, ms=ms, count=int(count)) for name, (ms, count) in self._totals.items()]
        return RenderProfile(frames=frames, wall_ms=wall, phases=phases)


class _NullProfiler(Profiler):
    """Does nothing (profiling off)."""

    active = False

    def add(self, name: str, seconds: float) -> None:
        return None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


NULL_PROFILER: Profiler = _NullProfiler()


def process_table() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, CPU ticks user + system)} of every live process (Linux /proc)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def tree_pids(table: dict[int, tuple[int, int]], pid: int) -> list[int]:
    """`pid` and its descendants in `table` (those of them still in it)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in table:
            found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of `pid`'s tree (Linux /proc)."""
    table = process_table()
    return sum(table[member][1] for member in tree_pids(table, pid)) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (ffmpeg, once it has exited and been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def new_profiler() -> Profiler:
    """A live profiler when HELIOS_PROFILE is on, else the shared no-op one."""
    return Profiler() if enabled() else NULL_PROFILER


def print_profile(profile: RenderProfile, label: str) -> None:
    """Write the breakdown to stderr."""
    sys.stderr.write(f"[{label}] " + "\n".join(profile.lines()) + "\n")
    sys.stderr.flush()
