"""<video> seeks under CPU load: how many captured frames show a video picture other than the expected one?

    .venv/bin/python benchmarks/video_seek_stress.py [--renders 10] [--frames 20] [--start 30] [--busy 2]
        [--modes bf,shell,chromium] [--added html,script]

A generated clip (160x120, 30 fps, VP9 with inter frames) shows its own frame number in 10 black/white
bars. The composition shows it full-frame, placed at composition time plus half a frame (so frame n of the
render must show picture n of the clip, never a neighbour by rounding). Each render fast-forwards to
`--start` and captures `--frames` frames the way a chunk does, with `--busy` busy-loop processes keeping
the cores loaded; every captured picture is decoded and compared with the frame it should show.

Modes: `bf` is the headless shell driven by HeadlessExperimental.beginFrame (BeginFrameCapture), `shell`
the headless shell with Page.captureScreenshot, `chromium` the new headless mode with
Page.captureScreenshot (DomCapture). `html` declares the <video> in the page; `script` adds it from a
timer at 100 ms. A render that fails (a retryable BrowserFault, or a timeout) is counted, not its frames.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stress_support import busy_cores, decode_bar_numbers  # noqa: E402

from helios_kit.errors import BrowserFault  # noqa: E402
from helios_kit.render import capture as capture_module  # noqa: E402
from helios_kit.render.browser import Browser, BrowserExecutable, CDPError, find_browser  # noqa: E402
from helios_kit.render.server import CompositionServer  # noqa: E402
from helios_kit.render.session import fast_forward, open_page  # noqa: E402
from helios_kit.spec import RenderConfig  # noqa: E402

W, H, BITS, CLIP_FRAMES = 160, 120, 10, 120
VIDEO = (
    '<video id="v" src="clip.webm" muted playsinline data-helios-offset="0" data-helios-seek="0.0166667" '
    'style="position:absolute;left:0;top:0;width:160px;height:120px;object-fit:fill"></video>'
)
PAGE = '<!doctype html><html><body style="margin:0;background:#000;overflow:hidden">{}</body></html>'
SCRIPT = "<script>setTimeout(() => document.body.insertAdjacentHTML('beforeend', {!r}), 100);</script>"


def make_clip(path: pathlib.Path, frames: int = CLIP_FRAMES) -> None:
    """A VP9 clip whose picture n shows n in binary: 10 bars, most significant left, white = 1."""
    pattern = "geq=lum='if(bitand(N,pow(2,9-floor(X*10/W))),235,16)':cb=128:cr=128"
    source = ["-f", "lavfi", "-i", f"nullsrc=s={W}x{H}:r=30,{pattern}", "-frames:v", str(frames)]
    codec = ["-c:v", "libvpx-vp9", "-crf", "20", "-b:v", "0", "-g", "30", "-deadline", "realtime", "-cpu-used", "8"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *source, *codec, "-pix_fmt", "yuv420p", str(path)], check=True)


class Counts:
    def __init__(self) -> None:
        self.frames = self.wrong = self.failed = self.checks = self.stale = 0
        self.examples: list[str] = []
        self.seconds = 0.0


def _browser(mode: str) -> Browser:
    if mode == "chromium":
        path = shutil.which("chromium") or shutil.which("chromium-browser")
        if path is None:
            raise SystemExit("mode chromium: no chromium on PATH")
        return Browser(BrowserExecutable(path, False))
    return Browser(find_browser(), begin_frame_control=mode == "bf")


def _counting_check(counts: Counts) -> Any:
    """capture.video_fresh, counting the checks and the stale captures it caught (when the code has it)."""
    original = capture_module.video_fresh

    def check(*args: Any, **kwargs: Any) -> bool:
        fresh = original(*args, **kwargs)
        counts.checks += 1
        counts.stale += 0 if fresh else 1
        return fresh

    return original, check


def one_render(folder: pathlib.Path, mode: str, start: int, frames: int, counts: Counts) -> None:
    config = RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=start + frames)
    server = CompositionServer(folder)
    browser = _browser(mode)
    began = time.monotonic()
    original = getattr(capture_module, "video_fresh", None)
    if original is not None:
        capture_module.video_fresh = _counting_check(counts)[1]
    try:
        page = open_page(browser, server.url_for(folder / "index.html"), config, 60.0, None)
        capture = capture_module.BeginFrameCapture if page.begin_frame_control else capture_module.DomCapture
        grab = capture(page, "jpeg", 60.0)
        fast_forward(page, 0, start, 60.0, None)
        images = [grab.frame(start + index) for index in range(frames)]
        decoded = decode_bar_numbers(images, W, H, BITS)
        counts.frames += len(decoded)
        for index, value in enumerate(decoded):
            if value != start + index:
                counts.wrong += 1
                counts.examples.append(f"frame {start + index} showed {value}")
    except (BrowserFault, CDPError, TimeoutError, capture_module.FrameError) as error:
        counts.failed += 1
        counts.examples.append(f"render failed: {str(error).splitlines()[0][:120]}")
    finally:
        if original is not None:
            capture_module.video_fresh = original
        counts.seconds += time.monotonic() - began
        browser.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--start", type=int, default=30)
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument("--modes", default="bf,shell,chromium")
    parser.add_argument("--added", default="html,script")
    args = parser.parse_args()
    if args.start + args.frames >= CLIP_FRAMES:
        parser.error(f"--start + --frames must stay below {CLIP_FRAMES} (the clip's length)")
    with busy_cores(args.busy), tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        make_clip(folder / "clip.webm")
        for added in args.added.split(","):
            body = VIDEO if added == "html" else SCRIPT.format(VIDEO)
            (folder / "index.html").write_text(PAGE.format(body))
            for mode in args.modes.split(","):
                counts = Counts()
                for _ in range(args.renders):
                    one_render(folder, mode, args.start, args.frames, counts)
                print(
                    f"{mode:8s} video in {added:6s} renders {args.renders}  failed {counts.failed}  "
                    f"wrong frames {counts.wrong}/{counts.frames}  "
                    f"stale captures caught {counts.stale}/{counts.checks}  "
                    f"({counts.seconds:.1f} s)  " + "; ".join(counts.examples[:4]),
                    flush=True,
                )
    print("command: " + " ".join([pathlib.Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
