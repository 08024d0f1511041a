"""Renderer speed, measured in one run: render_range per capture mode vs a raw screenshot loop.

    .venv/bin/python benchmarks/render_speed.py [--frames 60] [--width 1280 --height 720]

Prints frames/s of ``render_range`` for each example and capture mode, frames/s of a "raw limit" loop
(CDP screenshots back to back piped into the same ffmpeg encoder, no virtual time, no checks), their ratio,
the canvas/DOM ratio on the canvas example, and the peak RSS of the whole process tree (this process +
Chromium + ffmpeg, sampled every 50 ms). Goals: DOM >= 0.8 x raw; canvas >= 2 x DOM on the canvas scene.
"""

from __future__ import annotations

import argparse
import base64
import os
import pathlib
import sys
import tempfile
import threading
import time
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_kit.render import render_range  # noqa: E402
from helios_kit.render.browser import Browser, find_browser  # noqa: E402
from helios_kit.render.capture import JPEG_QUALITY  # noqa: E402
from helios_kit.render.encode import FrameEncoder  # noqa: E402
from helios_kit.render.profile import process_table, tree_pids  # noqa: E402
from helios_kit.render.server import CompositionServer  # noqa: E402
from helios_kit.spec import RenderConfig  # noqa: E402

EXAMPLES = ROOT / "examples"


class TreeCpu:
    """CPU seconds used by this process and its descendants while the block runs (sampled every `interval`
    in a thread, so a process's last < interval of work can be missed; a killed browser's orphaned children
    still count up to their last sample). Load-robust where wall time on a shared machine is not."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.seconds = 0.0
        self._ticks: dict[int, int] = {}
        self._base: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        table = process_table()
        for pid in tree_pids(table, os.getpid()):
            self._ticks[pid] = max(self._ticks.get(pid, 0), table[pid][1])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._sample()
        self._base = dict(self._ticks)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        ticks = sum(value - self._base.get(pid, 0) for pid, value in self._ticks.items())
        self.seconds = ticks / os.sysconf("SC_CLK_TCK")


class TreeRss:
    """Peak summed RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        total, todo, seen = 0, [os.getpid()], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += rss.get(pid, 0)
            todo.extend(child for child, parent in parents.items() if parent == pid)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_render(name: str, capture: str, frames: int, width: int, height: int, out_dir: pathlib.Path) -> tuple:
    config = RenderConfig(input="index.html", width=width, height=height, fps=30, frame_count=frames, capture=capture)
    started = time.perf_counter()
    stats = render_range(
        config,
        input_location=str(EXAMPLES / name),
        start_frame=0,
        frame_count=frames,
        output_path=out_dir / f"{name}-{capture}.mp4",
    )
    wall = time.perf_counter() - started
    return frames / wall, stats.capture, wall, frames / (stats.loop_ms / 1000)


class RawLimit(NamedTuple):
    """A bare capture loop: frames/s of the capture alone, and of capture piped into ffmpeg until it is done."""

    capture_fps: float
    encoded_fps: float
    wall: float


def _load_bare(page, url: str, width: int, height: int) -> None:
    """Navigate without our shim (the page's animations run on their own), waiting for the load event."""
    page.send("Page.enable")
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    page.wait_pumping(page.send_async("Page.navigate", {"url": url}), 30)
    deadline = time.monotonic() + 30
    while page.wait_event("Page.loadEventFired", 0.005) is None and time.monotonic() < deadline:
        if page.begin_frame_control:
            page.begin_frame()


def _grabber(page, width: int, height: int, canvas: bool):
    """One frame's JPEG, the way a render captures it, minus virtual time and checks: the canvas's
    toDataURL (canvas), a beginFrame screenshot (begin-frame mode) or Page.captureScreenshot."""
    params = {
        "format": "jpeg",
        "quality": JPEG_QUALITY,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        "optimizeForSpeed": True,
    }
    shot = {"format": "jpeg", "quality": JPEG_QUALITY, "optimizeForSpeed": True}
    expression = (
        "(() => { const u = document.querySelector('canvas').toDataURL('image/jpeg', "
        f"{JPEG_QUALITY / 100}); return u.slice(u.indexOf(',') + 1); }})()"
    )
    last = [b""]

    def grab() -> bytes:
        if canvas:
            return base64.b64decode(page.evaluate(expression))
        if page.begin_frame_control:
            data = page.begin_frame(shot).get("screenshotData")
            last[0] = base64.b64decode(data) if data else last[0]
            return last[0]
        return base64.b64decode(page.send("Page.captureScreenshot", params)["data"])

    return grab


def bench_raw(
    name: str,
    frames: int,
    width: int,
    height: int,
    out_dir: pathlib.Path,
    begin_frame: bool,
    canvas: bool = False,
) -> RawLimit:
    """The raw capture limit: the same capture back to back on the composition loaded bare (no virtual time,
    no stepping, no checks), in the same browser mode, JPEG at our quality, into the same ffmpeg encoder."""
    html = EXAMPLES / name / "index.html"
    executable = find_browser()
    with (
        CompositionServer(html.parent) as server,
        Browser(executable, begin_frame_control=begin_frame) as browser,
    ):
        page = browser.new_page(width, height)
        _load_bare(page, server.url_for(html), width, height)
        grab = _grabber(page, width, height, canvas)
        encoder = FrameEncoder(out_dir / f"{name}-raw.mp4", fps=30, frame_count=frames, image_format="jpeg")
        started = time.perf_counter()
        for _ in range(frames):
            encoder.put(grab())
        captured = time.perf_counter() - started
        encoder.finish()
        wall = time.perf_counter() - started
    return RawLimit(frames / captured, frames / wall, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    frames, width, height = args.frames, args.width, args.height
    print(f"browser: {find_browser().path}; {width}x{height}, 30 fps, {frames} frames; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp, TreeRss() as rss:
        out = pathlib.Path(tmp)
        raw: dict[str, float] = {}
        for mode, begin_frame in (("beginFrame", True), ("captureScreenshot", False)):
            limit = bench_raw("titles", frames, width, height, out, begin_frame)
            raw[mode] = limit.encoded_fps
            print(
                f"raw limit, titles, {mode:17s} loop: {limit.capture_fps:6.1f} frames/s captured, "
                f"{limit.encoded_fps:6.1f} frames/s into ffmpeg ({limit.wall:.2f} s)"
            )
        results: dict[tuple[str, str], float] = {}
        runs = (
            ("titles", "dom", "1"),
            ("titles", "dom", "0"),
            ("timeline", "dom", "1"),
            ("particles", "dom", "1"),
            ("particles", "auto", "1"),
        )
        for name, capture, begin_frame in runs:
            os.environ["HELIOS_BEGIN_FRAME"] = begin_frame
            fps, used, wall, loop_fps = bench_render(name, capture, frames, width, height, out)
            mode = "beginFrame" if begin_frame == "1" else "captureScreenshot"
            if used == "canvas":
                mode = "toDataURL"
            results[(name, mode)] = loop_fps
            print(
                f"render_range {name:9s} {capture:4s} -> {used:6s} {mode:17s}: {fps:6.1f} frames/s overall "
                f"({wall:.2f} s incl. launch+load), frame loop {loop_fps:6.1f} frames/s"
            )
        os.environ.pop("HELIOS_BEGIN_FRAME", None)
    for mode in ("beginFrame", "captureScreenshot"):
        ratio = results[("titles", mode)] / raw[mode]
        print(f"ratio DOM frame loop / raw loop, titles, {mode:17s}: {ratio:.2f}  (goal >= 0.8)")
    if ("particles", "toDataURL") in results:
        ratio = results[("particles", "toDataURL")] / results[("particles", "beginFrame")]
        print(f"ratio canvas / DOM frame loop (particles): {ratio:.2f}  (goal >= 2)")
    print(f"peak RSS, whole process tree: {rss.peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
