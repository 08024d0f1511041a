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

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_kit.render import render_range  # noqa: E402
from helios_kit.render.browser import Browser, find_browser  # noqa: E402
from helios_kit.render.capture import JPEG_QUALITY  # noqa: E402
from helios_kit.render.encode import FrameEncoder  # noqa: E402
from helios_kit.render.server import CompositionServer  # noqa: E402
from helios_kit.spec import RenderConfig  # noqa: E402

EXAMPLES = ROOT / "examples"


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
    return frames / wall, stats.capture, wall


def bench_raw(name: str, frames: int, width: int, height: int, out_dir: pathlib.Path) -> tuple[float, float]:
    """CDP screenshots back to back into the same ffmpeg (JPEG, same quality), no virtual time."""
    html = EXAMPLES / name / "index.html"
    with CompositionServer(html.parent) as server, Browser(find_browser()) as browser:
        page = browser.new_page(width, height)
        page.send("Page.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.send("Page.navigate", {"url": server.url_for(html)})
        page.wait_event("Page.loadEventFired", 30)
        params = {
            "format": "jpeg",
            "quality": JPEG_QUALITY,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            "optimizeForSpeed": True,
        }
        encoder = FrameEncoder(out_dir / f"{name}-raw.mp4", fps=30, frame_count=frames, image_format="jpeg")
        started = time.perf_counter()
        for _ in range(frames):
            encoder.put(base64.b64decode(page.send("Page.captureScreenshot", params)["data"]))
        encoder.finish()
        wall = time.perf_counter() - started
    return frames / wall, wall


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
        raw_fps, raw_wall = bench_raw("titles", frames, width, height, out)
        print(f"raw limit (titles, CDP screenshot loop -> ffmpeg): {raw_fps:6.1f} frames/s ({raw_wall:.2f} s)")
        results: dict[tuple[str, str], float] = {}
        for name, capture in (("titles", "dom"), ("timeline", "dom"), ("particles", "dom"), ("particles", "auto")):
            fps, used, wall = bench_render(name, capture, frames, width, height, out)
            results[(name, used)] = fps
            print(f"render_range {name:9s} capture={capture:4s} (used {used:6s}): {fps:6.1f} frames/s ({wall:.2f} s)")
    dom = results[("titles", "dom")]
    print(f"ratio DOM/raw (titles): {dom / raw_fps:.2f}  (goal >= 0.8)")
    if ("particles", "canvas") in results:
        ratio = results[("particles", "canvas")] / results[("particles", "dom")]
        print(f"ratio canvas/DOM (particles): {ratio:.2f}  (goal >= 2)")
    print(f"peak RSS, whole process tree: {rss.peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
