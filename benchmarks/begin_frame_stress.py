"""Begin-frame capture under CPU load: how often does a frame come back without a picture, or stale?

    .venv/bin/python benchmarks/begin_frame_stress.py [--renders 20] [--frames 12] [--start 6] [--busy 2]

Runs `--renders` begin-frame captures of a frame-index composition (160x120; frame n shows n in 10 bars)
with `--busy` busy-loop processes keeping the cores loaded (and, with `--spin`, each frame's step made slow
by a busy rAF callback, or with `--io`, by fetches the page holds the frame for (delayRender), so frames
are produced while the page waits), each render fast-forwarding to `--start` and
capturing `--frames` frames, the way a chunk does. Every captured picture is decoded and compared with the
frame it should show. Prints, per variant, the begin frames asked for a picture, those answered without
one, the renders that failed ("no picture"), and the wrong (stale or duplicated) frames.

Variants: `legacy` reproduces the capture before the fix (frames produced while waiting for the page draw
to the display, no frameTimeTicks, no --enable-surface-synchronization, a frame without damage answered
with the previous picture); `current` is the code as it is.
"""

from __future__ import annotations

import argparse
import base64
import pathlib
import sys
import tempfile
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stress_support import busy_cores, decode_bar_numbers  # noqa: E402

from helios_kit.errors import BrowserFault  # noqa: E402
from helios_kit.render import browser as browser_module  # noqa: E402
from helios_kit.render import capture as capture_module  # noqa: E402
from helios_kit.render.browser import Browser, CDPError, Page, find_browser  # noqa: E402
from helios_kit.render.server import CompositionServer  # noqa: E402
from helios_kit.render.session import fast_forward, open_page  # noqa: E402
from helios_kit.spec import RenderConfig  # noqa: E402

W, H, BITS = 160, 120, 10
HTML = """<!doctype html><html><head><style>html,body{margin:0;background:#000;overflow:hidden}
#b{display:flex;width:100vw;height:100vh}#b div{flex:1;background:#000}</style></head>
<body><div id="b"></div><script>
const cells=[];for(let i=0;i<10;i++)cells.push(document.getElementById("b").appendChild(document.createElement("div")));
function paint(){let x=0;for(let i=0;i<SPIN;i++)x+=Math.sqrt(i);window.__sink=x;
const n=Math.round(performance.now()*30/1000);
cells.forEach((c,i)=>{c.style.background=(n>>(9-i))&1?"#fff":"#000"});
if(IO>0&&window.helios&&window.helios.delayRender){const h=window.helios.delayRender("io");let p=Promise.resolve();
for(let k=0;k<IO;k++)p=p.then(()=>fetch("index.html?"+n+"-"+k)).then(r=>r.text());
p.then(()=>window.helios.continueRender(h))}
requestAnimationFrame(paint)}
paint();</script></body></html>"""


class Counts:
    def __init__(self) -> None:
        self.asked = 0
        self.missing = 0
        self.failed = 0
        self.wrong = 0
        self.frames = 0
        self.pumps = 0


def _legacy_begin_frame(self: Page, screenshot: dict[str, Any] | None = None, timeout: float = 60.0, **_: Any):
    params: dict[str, Any] = {"interval": 1000 / 60}
    if screenshot is not None:
        params["screenshot"] = screenshot
    return self.send("HeadlessExperimental.beginFrame", params, timeout=timeout)


def _legacy_pump(self: Page, timeout: float = 10.0) -> dict[str, Any]:
    return _legacy_begin_frame(self, None, timeout=timeout)


def _legacy_frame(self: capture_module.BeginFrameCapture, frame: int) -> bytes:
    capture_module.run_step(self.page, capture_module.clock.step_expression(frame), frame, self.timeout)
    for _ in range(3):
        result = self.page.begin_frame(self.shot, timeout=self.timeout)
        if result.get("screenshotData"):
            self.last = base64.b64decode(result["screenshotData"])
            return self.last
        if self.last is not None and not result.get("hasDamage", True):
            return self.last
    raise BrowserFault(f"screenshot failed: Chromium produced no picture for frame {frame}")


def _one_render(folder: pathlib.Path, start: int, frames: int, counts: Counts) -> None:
    config = RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=start + frames)
    server = CompositionServer(folder)
    browser = Browser(find_browser(), begin_frame_control=True)
    original = browser_module.Page.begin_frame

    def counting(self: Page, screenshot: dict[str, Any] | None = None, timeout: float = 60.0, **kw: Any):
        result = original(self, screenshot, timeout=timeout, **kw)
        if screenshot is not None:
            counts.asked += 1
            counts.missing += 0 if result.get("screenshotData") else 1
        return result

    pump = browser_module.Page.pump

    def counting_pump(self: Page, timeout: float = 10.0) -> dict[str, Any]:
        counts.pumps += 1
        return pump(self, timeout)

    browser_module.Page.begin_frame = counting  # type: ignore[method-assign]
    browser_module.Page.pump = counting_pump  # type: ignore[method-assign]
    try:
        page = open_page(browser, server.url_for(folder / "index.html"), config, 30.0, None)
        capture = capture_module.BeginFrameCapture(page, "jpeg", 30.0)
        fast_forward(page, 0, start, 30.0, None)
        images = [capture.frame(start + index) for index in range(frames)]
        decoded = decode_bar_numbers(images, W, H, BITS)
        counts.frames += len(decoded)
        counts.wrong += sum(1 for index, value in enumerate(decoded) if value != start + index)
    except (BrowserFault, CDPError, TimeoutError):
        counts.failed += 1
    finally:
        browser_module.Page.begin_frame = original  # type: ignore[method-assign]
        browser_module.Page.pump = pump  # type: ignore[method-assign]
        browser.close()
        server.close()


def run_variant(name: str, args: argparse.Namespace, folder: pathlib.Path) -> Counts:
    saved = (
        browser_module.Page.begin_frame,
        capture_module.BeginFrameCapture.frame,
        browser_module.BEGIN_FRAME_FLAGS,
        browser_module.Page.pump,
    )
    if name == "legacy":
        browser_module.Page.begin_frame = _legacy_begin_frame  # type: ignore[method-assign,assignment]
        capture_module.BeginFrameCapture.frame = _legacy_frame  # type: ignore[method-assign]
        browser_module.BEGIN_FRAME_FLAGS = tuple(
            flag for flag in saved[2] if flag != "--enable-surface-synchronization"
        )
        browser_module.Page.pump = _legacy_pump  # type: ignore[method-assign,assignment]
    counts = Counts()
    try:
        for _ in range(args.renders):
            _one_render(folder, args.start, args.frames, counts)
    finally:
        browser_module.Page.begin_frame, capture_module.BeginFrameCapture.frame = saved[0], saved[1]  # type: ignore[method-assign]
        browser_module.BEGIN_FRAME_FLAGS = saved[2]
        browser_module.Page.pump = saved[3]  # type: ignore[method-assign]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--start", type=int, default=6)
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument("--variants", default="legacy,current")
    parser.add_argument("--spin", type=int, default=0, help="busy iterations per frame in the page (slow steps)")
    parser.add_argument("--io", type=int, default=0, help="fetches per frame the page waits for (delayRender)")
    args = parser.parse_args()
    with busy_cores(args.busy), tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        (folder / "index.html").write_text(HTML.replace("SPIN", str(args.spin)).replace("IO", str(args.io)))
        for name in args.variants.split(","):
            counts = run_variant(name, args, folder)
            print(
                f"{name:8s} renders {args.renders}  begin frames asked for a picture {counts.asked}  "
                f"answered without one {counts.missing}  renders failed {counts.failed}  "
                f"wrong frames {counts.wrong}/{counts.frames}  frames produced while waiting {counts.pumps}",
                flush=True,
            )
    print("command: " + " ".join([pathlib.Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
