"""One render on several cores: split the frame range, render the parts at once, join them by stream copy.

A render captures in one browser and encodes in one ffmpeg, which keeps about 1.2 of this machine's cores
busy. Virtual time makes every frame independent of where its chunk starts (a part fast-forwards to its
first frame without capturing), so `helios render` can render its range as N parts in N browsers at once
and stitch them: the pixels are those of a one-part render. Short renders stay in one part, since each part
pays for its own browser launch, page load and fast-forward.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from helios_kit.planner import split_frames
from helios_kit.render.session import RenderStats, declares_video, render_range
from helios_kit.spec import RenderConfig

#: Frames a part should have at least before splitting pays for another browser (about a second of launch,
#: load and fast-forward against several seconds of capture).
MIN_FRAMES_PER_PART = 45


def auto_parts(
    frame_count: int, cpus: int | None = None, capture: str = "auto", input_location: str | None = None
) -> int:
    """How many parts `helios render` uses by default: one per core, each with enough frames to pay off.

    Canvas capture draws and encodes inside the page on every core it can get (measured on 2 cores with
    the particles example: 2 parts ran at 0.94x of 1 part, while DOM examples ran 1.30x to 1.45x faster),
    so an explicit `--capture canvas` stays in one part. `auto` cannot know before the page loads.
    A composition with a ``<video>`` (`input_location`'s HTML says so before anything loads) stays in one
    part too: it renders in the full browser through screenshots, whose processes kept 1.4 of 2 cores busy
    on their own (the timeline example), and 2 parts ran at 0.53x of 1 part over 150 frames (titles: 1.31x).
    """
    if capture == "canvas" or (input_location is not None and declares_video(input_location)):
        return 1
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(cpus, frame_count // MIN_FRAMES_PER_PART))


def render_parallel(
    config: RenderConfig,
    *,
    input_location: str,
    start_frame: int,
    frame_count: int,
    output_path: pathlib.Path,
    parts: int,
    quiet: bool = True,
    cancel: threading.Event | None = None,
) -> RenderStats:
    """Render [start_frame, start_frame + frame_count) into `output_path` as `parts` concurrent renders."""
    if parts <= 1 or frame_count < 2:
        return render_range(
            config,
            input_location=input_location,
            start_frame=start_frame,
            frame_count=frame_count,
            output_path=output_path,
            cancel=cancel,
            quiet=quiet,
        )
    from helios_kit.render.progress import RenderProgress
    from helios_kit.stitch import stitch

    started = time.monotonic()
    output_path = pathlib.Path(output_path).expanduser().absolute()
    ranges = split_frames(start_frame, frame_count, concurrency=parts)
    work_dir = output_path.parent / f".{output_path.name}.parts-{uuid.uuid4().hex[:8]}"
    abort = threading.Event()
    done = [0] * len(ranges)
    lock = threading.Lock()

    def watch_cancel() -> None:
        if cancel is not None:
            while not abort.is_set():
                if cancel.wait(0.1):
                    abort.set()

    try:
        work_dir.mkdir()
        with RenderProgress(output_path.name, frame_count, quiet=quiet) as reporter:

            def part_progress(index: int):
                def report(frames_done: int, _total: int) -> None:
                    with lock:
                        done[index] = frames_done
                        reporter(sum(done), frame_count)

                return report

            threading.Thread(target=watch_cancel, name="helios-render-cancel", daemon=True).start()
            stats = _render_parts(config, input_location, ranges, work_dir, part_progress, abort)
        stitch([pathlib.Path(s.output_path) for s in stats], output_path, expected_frames=frame_count)
    finally:
        abort.set()
        shutil.rmtree(work_dir, ignore_errors=True)
    return _joined_stats(stats, frame_count, output_path, started)


def _render_parts(
    config: RenderConfig,
    input_location: str,
    ranges: list[tuple[int, int]],
    work_dir: pathlib.Path,
    part_progress: Callable[[int], Callable[[int, int], None]],
    abort: threading.Event,
) -> list[RenderStats]:
    """Render each range in its own browser at once; the first failure stops the others and is raised."""
    with ThreadPoolExecutor(len(ranges), thread_name_prefix="helios-part") as pool:
        futures = [
            pool.submit(
                render_range,
                config,
                input_location=input_location,
                start_frame=first,
                frame_count=count,
                output_path=work_dir / f"part-{index:03d}.mp4",
                progress=part_progress(index),
                cancel=abort,
                quiet=True,
            )
            for index, (first, count) in enumerate(ranges)
        ]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in finished if future.exception() is not None]
        if failed:
            abort.set()  # the other parts stop promptly and kill their browsers
            wait(futures)
            raise failed[0].exception()  # type: ignore[misc]
    return [future.result() for future in futures]


def _joined_stats(stats: list[RenderStats], frame_count: int, output_path: pathlib.Path, started: float) -> RenderStats:
    """The stats of the whole render from its parts' (the last part has seen every frame from 0)."""
    dependencies = {dep.key: dep for part in stats for dep in part.dependencies}
    return RenderStats(
        frames=frame_count,
        duration_ms=(time.monotonic() - started) * 1000,
        output_path=str(output_path),
        capture=stats[0].capture,
        fast_forward_ms=max(s.fast_forward_ms for s in stats),
        loop_ms=max(s.loop_ms for s in stats),
        browser=stats[0].browser,
        dependencies=[dependencies[key] for key in sorted(dependencies)],
        media_seen=stats[-1].media_seen,  # the last part stepped every frame from 0 to the end
        media=stats[-1].media,
    )
