"""A counting, gateable stand-in render for the cooperative-runner and straggler tests (no Chromium).

`HELIOS_WORKER_RENDER=fakes.counting:counting_render` renders like :func:`fakes.renders.frame_index_render`
(a real ffmpeg video, frame-exact checkable) and first appends one line per render to the file named by
`HELIOS_FAKE_RENDER_LOG`: `<runner pid> <worker pid> <start frame>` (the runner is the worker's parent), so a
test counts renders across processes. Two gates make interleavings happen by events, never by timing:

* `HELIOS_FAKE_RENDER_GATE=N`: a render waits until renders from N different runners are in the log;
* `HELIOS_FAKE_RENDER_BLOCK=path`: a render waits until that file exists (a test kills it meanwhile).

`HELIOS_FAKE_RENDER_SLOW=frame:seconds` makes the first render (across processes) of the chunk starting at
`frame` take that long: a straggling invocation whose backup runs at normal speed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fakes.renders import FakeStats, frame_index_render

GATE_LIMIT_S = 120.0


def _log_lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


def _wait_for(condition: Any, cancel: Any) -> None:
    deadline = time.monotonic() + GATE_LIMIT_S
    while not condition() and time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            return
        time.sleep(0.05)


def _slow_once(start_frame: int, cancel: Any) -> None:
    spec = os.environ.get("HELIOS_FAKE_RENDER_SLOW", "")
    if not spec:
        return
    frame, seconds = spec.split(":")
    if int(frame) != start_frame:
        return
    marker = Path(os.environ["HELIOS_FAKE_RENDER_LOG"] + f".slow-{frame}")
    try:
        marker.open("x").close()
    except FileExistsError:
        return
    if cancel is not None:
        cancel.wait(float(seconds))
    else:
        time.sleep(float(seconds))


def counting_render(config: Any, *, start_frame: int, frame_count: int, output_path: Path, **kwargs: Any) -> Any:
    log = Path(os.environ["HELIOS_FAKE_RENDER_LOG"])
    with open(log, "a") as handle:
        handle.write(f"{os.getppid()} {os.getpid()} {start_frame}\n")
    cancel = kwargs.get("cancel")
    gate = int(os.environ.get("HELIOS_FAKE_RENDER_GATE", "0") or 0)
    if gate:
        _wait_for(lambda: len({line[0] for line in _log_lines(log)}) >= gate, cancel)
    block = os.environ.get("HELIOS_FAKE_RENDER_BLOCK")
    if block:
        _wait_for(lambda: Path(block).exists(), cancel)
    _slow_once(start_frame, cancel)
    stats: FakeStats = frame_index_render(
        config, start_frame=start_frame, frame_count=frame_count, output_path=output_path, **kwargs
    )
    stats.media_seen = 0  # type: ignore[attr-defined]  # no media: the merge looks for no audio
    return stats


_TEMPLATES: dict[tuple[int, int, float], bytes] = {}


def template_render(config: Any, *, start_frame: int, frame_count: int, output_path: Path, **kwargs: Any) -> Any:
    """A cheap render for scale benchmarks: one real 1-frame-per-chunk-frame video made once per process and
    copied (no Chromium; ffmpeg once), so the merge can stitch hundreds of chunks. Not frame-exact."""
    import subprocess

    from fakes.renders import frame_index_frames

    key = (config.width, config.height, config.fps, frame_count)
    if key not in _TEMPLATES:
        made = Path(output_path).with_suffix(".template.mp4")
        frames = frame_index_frames(config.width, config.height, 0, frame_count)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s",
             f"{config.width}x{config.height}", "-r", f"{config.fps:g}", "-i", "-", "-c:v", config.video_codec,
             "-pix_fmt", config.pixel_format, "-g", str(frame_count), "-bf", "0", str(made)],
            input=frames, check=True, capture_output=True,
        )  # fmt: skip
        _TEMPLATES[key] = made.read_bytes()
        made.unlink()
    Path(output_path).write_bytes(_TEMPLATES[key])
    stats = FakeStats(frame_count)
    stats.media_seen = 0  # type: ignore[attr-defined]
    return stats


def failing_pid_render(config: Any, *, start_frame: int, frame_count: int, output_path: Path, **kwargs: Any) -> Any:
    """:func:`counting_render`, except that a process whose pid is listed in the file named by
    `HELIOS_FAKE_FAIL_PIDS` fails every chunk (retryable): a broken worker among good ones."""
    from helios_kit.errors import RenderError

    listed = Path(os.environ.get("HELIOS_FAKE_FAIL_PIDS", "/nonexistent"))
    if listed.exists() and str(os.getpid()) in listed.read_text().split():
        with open(os.environ["HELIOS_FAKE_RENDER_LOG"], "a") as handle:
            handle.write(f"{os.getppid()} {os.getpid()} {start_frame} failed\n")
        raise RenderError(f"broken worker {os.getpid()} (fake)", retryable=True)
    return counting_render(config, start_frame=start_frame, frame_count=frame_count, output_path=output_path, **kwargs)
