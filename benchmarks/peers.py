"""Speed against peers, side by side in one run: helios-kit vs timecut 0.3.3 vs the original Helios renderer.

    .venv/bin/python benchmarks/peers.py [--frames 60] [--width 1280 --height 720] [--cache DIR]

Installs its peers from npm itself into a cache folder (default ``~/.cache/helios-kit/bench-peers``, once):
``timecut@0.3.3`` (driven through puppeteer-core 2.1.1 pointed at the system Chromium, no download) and
``@helios-project/renderer`` (Playwright, pointed at the system Chromium; its launch arguments carry
``--single-process``, with which its DOM mode hangs on current Chromium, so the installed copy is patched to
drop it). Then renders the same two compositions at the same size, frame count and fps with each:

* DOM: ``examples/titles`` (ours: DOM capture; timecut: screenshots; Helios: ``mode: "dom"``);
* canvas: ``examples/particles`` (ours: ``auto`` = canvas capture, and with ``HELIOS_CANVAS_WEBCODECS=1``
  encoded in the page; timecut: ``canvasCaptureMode``; Helios: ``mode: "canvas"``);

each timed from launch to a finished MP4, alternating tools so load on the shared machine hits them alike.
Ours runs in this process as `helios render` decides (``auto_parts``: 2 lanes, i.e. 2 browsers capturing
interleaved frames, for 60 frames of a DOM page on 2 cores; a canvas page ends up in one), in one lane
(``render_range``), and as the CLI (``helios render``, a fresh Python process, like the peers' fresh node
processes). Next to them the raw capture limit: the same capture (beginFrame screenshot
for DOM, ``toDataURL`` for canvas) back to back on the composition loaded bare, in the same browser mode
(``benchmarks/render_speed.py``), captured alone and piped into the same ffmpeg. Prints seconds and frames/s
per tool, the CPU seconds of each tool's whole process tree (sampled from /proc: robust where wall time on a
shared machine is not), each output's frame count and size (a tool that skips drawing shows as a tiny
file), the ratios (ours vs each peer, by wall and by CPU), the CPU floor (ours' CPU seconds spread perfectly
over every core, and the best ratio each peer would then see), ours as it decides vs in 1 lane on each
composition, the load average before and after, and the command; ``--rounds N`` repeats it all (one
table of ratios per round).
Peers use the same browser binary as ours (the system headless shell), except the Helios renderer's DOM
mode: the system `chromium` (that mode hangs in the headless shell).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_kit.render import render_range  # noqa: E402
from helios_kit.render.browser import find_browser  # noqa: E402
from helios_kit.render.encode import find_ffmpeg  # noqa: E402
from helios_kit.render.parallel import auto_parts, render_parallel  # noqa: E402
from helios_kit.spec import RenderConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from render_speed import TreeCpu, bench_raw  # noqa: E402

EXAMPLES = ROOT / "examples"
PEERS = ("timecut@0.3.3", "puppeteer-core@2.1.1", "@helios-project/renderer@1.78.3")
TOOLS = (
    "helios-kit",
    "timecut",
    "helios-renderer",
    "helios-kit CLI",
    "helios-kit webcodecs",
    "helios-kit 1 lane",
    "timecut defaults",
)
#: The peers, as their rows are named.
PEER_NAMES = ("timecut", "timecut defaults", "helios-renderer")
SINGLE_PROCESS_LINE = "    '--single-process',\n"

TIMECUT_JS = r"""
const [url, output, frames, width, height, canvas, chromium, ffmpegPath, defaults] = process.argv.slice(2);
const timecut = require('timecut');
const puppeteer = require('puppeteer-core');
// "defaults": timecut as shipped (PNG frames written to a temp folder, then encoded)
const capture = defaults === '1' ? { canvasCaptureMode: canvas === '1' ? 'png' : undefined } : {
  // otherwise JPEG at 0.92 as ours, piped to ffmpeg (its fastest way)
  screenshotType: 'jpeg', screenshotQuality: 0.92, pipeMode: true,
  canvasCaptureMode: canvas === '1' ? 'jpeg' : undefined,
};
timecut({
  url, output, fps: 30, frames: Number(frames), quiet: true,
  viewport: { width: Number(width), height: Number(height) },
  ...capture,
  outputOptions: ['-c:v', 'libx264', '-crf', '18', '-pix_fmt', 'yuv420p'],
  launcher: (options) => puppeteer.launch({ ...options, executablePath: chromium,
    args: [...(options.args || []), '--no-sandbox', '--disable-gpu'] }),
}).then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });
"""

HELIOS_JS = r"""
import { Renderer } from '@helios-project/renderer';
const [url, output, frames, width, height, canvas, chromium, ffmpegPath] = process.argv.slice(2);
const renderer = new Renderer({
  width: Number(width), height: Number(height), fps: 30, durationInSeconds: Number(frames) / 30,
  frameCount: Number(frames), mode: canvas === '1' ? 'canvas' : 'dom', ffmpegPath,
  browserConfig: { executablePath: chromium, args: ['--no-sandbox'] },
});
renderer.render(url, output).then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });
"""


def install_peers(cache: pathlib.Path) -> None:
    """npm install the peers into `cache` (once), and drop --single-process from the Helios renderer."""
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text(json.dumps({"name": "helios-bench-peers", "private": True}))
    if not all((cache / "node_modules" / name.rsplit("@", 1)[0]).is_dir() for name in PEERS):
        env = dict(
            os.environ,
            PUPPETEER_SKIP_CHROMIUM_DOWNLOAD="1",
            PUPPETEER_SKIP_DOWNLOAD="1",
            PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
        )
        argv = ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", *PEERS]
        subprocess.run(argv, cwd=cache, env=env, check=True, stdout=subprocess.DEVNULL)
    pool = cache / "node_modules/@helios-project/renderer/dist/core/BrowserPool.js"
    text = pool.read_text()
    if SINGLE_PROCESS_LINE in text:
        pool.write_text(text.replace(SINGLE_PROCESS_LINE, ""))
    (cache / "timecut-run.js").write_text(TIMECUT_JS)
    (cache / "helios-run.mjs").write_text(HELIOS_JS)


def _frames_in(video: pathlib.Path) -> int:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(video)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return int(probe.stdout.strip() or 0)


def peer_browser(script: str, canvas: bool) -> str:
    """Our browser (the headless shell), except for the Helios renderer's DOM mode: `chromium` (new
    headless). That mode captures with Page.captureScreenshot under its own compositor flags, which hangs in
    the headless shell here even without --single-process (its canvas mode runs there)."""
    if script.startswith("helios") and not canvas:
        return shutil.which("chromium") or find_browser().path
    return find_browser().path


def run_peer(
    script: str, cache: pathlib.Path, html: pathlib.Path, out: pathlib.Path, args, canvas: bool, defaults: bool = False
) -> float:
    """Seconds for a peer to render `html` into `out` (node, launch to finished file)."""
    argv = ["node", str(cache / script), html.as_uri(), str(out), str(args.frames), str(args.width)]
    argv += [
        str(args.height),
        "1" if canvas else "0",
        peer_browser(script, canvas),
        find_ffmpeg(),
        "1" if defaults else "0",
    ]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cache, capture_output=True, text=True, timeout=args.peer_timeout, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"{script} failed ({done.returncode}): {' | '.join(tail)}")
    return wall


def run_ours(html: pathlib.Path, out: pathlib.Path, args, capture: str, parts: int = 0) -> float:
    """Seconds for ours in this process: as `helios render` decides (parts=0: `auto_parts`), or in N lanes."""
    config = RenderConfig(
        input="index.html", width=args.width, height=args.height, fps=30, frame_count=args.frames, capture=capture
    )
    started = time.perf_counter()
    parts = parts or auto_parts(args.frames, capture=capture)
    if parts > 1:
        render_parallel(config, input_location=str(html), start_frame=0, frame_count=args.frames, output_path=out,
                        parts=parts)  # fmt: skip
    else:
        render_range(config, input_location=str(html), start_frame=0, frame_count=args.frames, output_path=out)
    return time.perf_counter() - started


def run_cli(html: pathlib.Path, out: pathlib.Path, args, capture: str) -> float:
    """Seconds for `helios render` (a fresh process: interpreter start, imports, launch, render, encode)."""
    helios = pathlib.Path(sys.executable).with_name("helios")
    argv = [str(helios), "render", str(html), "-o", str(out), "--frame-count", str(args.frames), "--fps", "30"]
    argv += ["--width", str(args.width), "--height", str(args.height), "--capture", capture, "-q"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.peer_timeout, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"helios render failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return wall


def _run_tool(tool: str, html: pathlib.Path, out: pathlib.Path, args, capture: str, canvas: bool) -> float:
    if tool == "helios-kit CLI":
        return run_cli(html, out, args, capture)
    if tool == "helios-kit webcodecs":
        os.environ["HELIOS_CANVAS_WEBCODECS"] = "1"
        try:
            return run_ours(html, out, args, capture)
        finally:
            os.environ.pop("HELIOS_CANVAS_WEBCODECS", None)
    if tool.startswith("timecut"):
        return run_peer("timecut-run.js", args.cache, html, out, args, canvas, defaults=tool.endswith("defaults"))
    if tool == "helios-renderer":
        return run_peer("helios-run.mjs", args.cache, html, out, args, canvas)
    return run_ours(html, out, args, capture, parts=1 if tool.endswith("1 lane") else 0)


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_round(args, tmp: pathlib.Path) -> dict[tuple[str, str], float]:
    """Every tool on both scenes, plus the raw limits; {(scene, tool): frames/s}."""
    scenes = (
        ("DOM", "titles", "dom", False),
        ("canvas", "particles", "auto", True),
    )
    fps: dict[tuple[str, str], float] = {}
    for scene, name, capture, canvas in scenes:
        html = EXAMPLES / name / "index.html"
        tools = [
            tool
            for tool in TOOLS
            if (canvas or "webcodecs" not in tool) and (args.timecut_defaults or "defaults" not in tool)
        ]
        for tool in tools:
            out = tmp / f"{scene}-{tool.replace(' ', '-').replace('=', '')}.mp4"
            try:
                with TreeCpu() as cpu:
                    wall = _run_tool(tool, html, out, args, capture, canvas)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"{scene:6s} {tool:20s} failed: {error}", flush=True)
                continue
            fps[(scene, tool)] = args.frames / wall
            fps[(scene, tool + " cpu")] = cpu.seconds
            print(
                f"{scene:6s} {tool:20s} {wall:7.2f} s  {args.frames / wall:6.1f} frames/s  "
                f"CPU {cpu.seconds:6.2f} s ({cpu.seconds / args.frames * 1000:5.1f} ms/frame)  "
                f"({_frames_in(out)} frames, {out.stat().st_size / 1e6:5.2f} MB in its output)",
                flush=True,
            )
        limit = bench_raw(name, args.frames, args.width, args.height, tmp, begin_frame=True, canvas=canvas)
        fps[(scene, "raw capture")] = limit.capture_fps
        fps[(scene, "raw capture+ffmpeg")] = limit.encoded_fps
        what = "toDataURL" if canvas else "beginFrame screenshot"
        print(
            f"{scene:6s} raw limit ({what}, bare page): {limit.capture_fps:6.1f} frames/s captured, "
            f"{limit.encoded_fps:6.1f} frames/s into ffmpeg",
            flush=True,
        )
    return fps


def _cpu_ratio(fps: dict[tuple[str, str], float], scene: str, peer: str, ours: str) -> str:
    theirs, mine = fps.get((scene, peer + " cpu")), fps.get((scene, ours + " cpu"))
    return f"{theirs / mine:5.2f}x" if theirs and mine else "  n/a"


def print_cpu_floor(fps: dict[tuple[str, str], float], scene: str, frames: int) -> None:
    """The fastest ours could be with its CPU seconds spread perfectly over every core, and the ratios that
    would give: a ratio goal above them needs less CPU per frame, not better overlap."""
    cpu, cores = fps.get((scene, "helios-kit cpu")), os.cpu_count() or 1
    if not cpu:
        return
    floor = cpu / cores
    ceilings = [f"{peer} {frames / fps[(scene, peer)] / floor:4.2f}x" for peer in PEER_NAMES if fps.get((scene, peer))]
    best = f"{cpu:.2f} CPU-s on {cores} cores = {floor:.2f} s at best"
    print(f"{scene:6s} CPU floor: {best}; at most {', '.join(ceilings)}")


def print_ratios(fps: dict[tuple[str, str], float], frames: int) -> None:
    for scene in ("DOM", "canvas"):
        ours = fps.get((scene, "helios-kit"))
        if not ours:
            continue
        raw = fps.get((scene, "raw capture"), 0.0)
        encoded = fps.get((scene, "raw capture+ffmpeg"), 0.0)
        print(f"{scene:6s} ours {ours:5.1f} frames/s; raw capture limit {raw:5.1f} (with ffmpeg {encoded:5.1f})")
        for peer in PEER_NAMES:
            theirs = fps.get((scene, peer))
            if theirs:
                print(f"{scene:6s} helios-kit vs {peer:16s}: {ours / theirs:5.2f}x", end="")
                cli = fps.get((scene, "helios-kit CLI"))
                print(f"   (CLI: {cli / theirs:5.2f}x)" if cli else "", end="")
                print(f"   CPU seconds, theirs / ours: {_cpu_ratio(fps, scene, peer, 'helios-kit')}")
        print_cpu_floor(fps, scene, frames)
    webcodecs = fps.get(("canvas", "helios-kit webcodecs"))
    for peer in ("timecut", "helios-renderer"):
        theirs = fps.get(("canvas", peer))
        if webcodecs and theirs:
            ratio = _cpu_ratio(fps, "canvas", peer, "helios-kit webcodecs")
            print(f"canvas helios-kit webcodecs vs {peer:16s}: {webcodecs / theirs:5.2f}x   CPU: {ratio}")
    for scene in ("DOM", "canvas"):
        default, one = fps.get((scene, "helios-kit")), fps.get((scene, "helios-kit 1 lane"))
        if default and one:
            print(f"{scene:6s} helios-kit as it decides vs in 1 lane: {default / one:5.2f}x", end="")
            theirs = fps.get((scene, "helios-renderer"))
            print(f"   1 lane vs helios-renderer: {one / theirs:5.2f}x" if theirs else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison")
    parser.add_argument("--timecut-defaults", action="store_true", help="also timecut as shipped (PNG files)")
    parser.add_argument("--peer-timeout", type=float, default=900, help="seconds before a peer's render is given up")
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path.home() / ".cache/helios-kit/bench-peers")
    args = parser.parse_args()
    install_peers(args.cache)
    print(f"browser {find_browser().path}; {args.width}x{args.height}, 30 fps, {args.frames} frames; "
          f"{os.cpu_count()} cores; peers in {args.cache}", flush=True)  # fmt: skip
    for round_ in range(1, args.rounds + 1):
        print(f"-- round {round_}: {_load()}", flush=True)
        with tempfile.TemporaryDirectory(prefix="helios-peers-") as tmp:
            fps = run_round(args, pathlib.Path(tmp))
        print(f"-- round {round_} ratios ({_load()} after):")
        print_ratios(fps, args.frames)
    print("command: " + " ".join([pathlib.Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
