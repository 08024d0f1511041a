"""Warm browsers (helios_kit.render.warm) with real Chromium and ffmpeg: nothing of one render is visible in
the next on the same kept browser and tab (globals, storage, cookies, caches, service workers, window.name,
history, clock, seed, props), frames of warm renders equal cold ones, and a dead or hung browser is
replaced, never reused."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.loopback import LoopbackHTTPServer
from render.conftest import decode

from helios_kit.render import render_range
from helios_kit.render.warm import WarmBrowser
from helios_kit.spec import RenderConfig

W, H = 160, 120
BITS = 8
LEAKS = ["global", "localStorage", "sessionStorage", "cookie", "indexedDB", "caches", "serviceWorker", "name"]

#: Paints, on every frame, which state of an earlier render it found at load (one bar per LEAKS entry, white
#: = found), then sets all that state itself. Frame 0 waits (delayRender) until the asynchronous checks end.
LEAK_HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; background: #000; overflow: hidden; }
#bars { display: flex; width: 100vw; height: 100vh; } #bars div { flex: 1; background: #000; }
</style></head><body><div id="bars"></div><script>
const LEAKS = __LEAKS__, bars = document.getElementById("bars");
const cells = LEAKS.map(() => bars.appendChild(document.createElement("div")));
const handle = window.helios.delayRender("probe");
async function probe() {
  const found = new Set();
  if (window.__leak !== undefined) found.add("global");
  if (localStorage.getItem("leak")) found.add("localStorage");
  if (sessionStorage.getItem("leak")) found.add("sessionStorage");
  if (document.cookie.includes("leak=")) found.add("cookie");
  if (window.name) found.add("name");
  if ((await indexedDB.databases()).some((d) => d.name === "leak")) found.add("indexedDB");
  if ((await caches.keys()).includes("leak")) found.add("caches");
  if ((await navigator.serviceWorker.getRegistrations()).length) found.add("serviceWorker");
  LEAKS.forEach((name, i) => { cells[i].style.background = found.has(name) ? "#fff" : "#000"; });
  window.__leak = 1;
  localStorage.setItem("leak", "1");
  sessionStorage.setItem("leak", "1");
  document.cookie = "leak=1; max-age=3600; path=/";
  window.name = "leak";
  await new Promise((done) => {
    const r = indexedDB.open("leak");
    r.onsuccess = () => { r.result.close(); done(); };
    r.onerror = done;
  });
  await (await caches.open("leak")).put("/cached", new Response("x"));
  await navigator.serviceWorker.register("sw.js");
}
probe().finally(() => window.helios.continueRender(handle));
</script></body></html>
""".replace("__LEAKS__", str(LEAKS).replace("'", '"'))

#: Row 0: the frame index (virtual clock); row 1: the first Math.random() byte (seed); row 2: props.value;
#: row 3: how many renders this page's globals have seen (a leaked global would count up).
STATE_HTML = """<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin: 0; background: #000; overflow: hidden; }
.row { display: flex; width: 100vw; height: 25vh; } .row div { flex: 1; background: #000; }
</style></head><body><script>
const rows = [0, 1, 2, 3].map(() => { const r = document.body.appendChild(document.createElement("div"));
  r.className = "row"; return Array.from({length: 8}, () => r.appendChild(document.createElement("div"))); });
const paint = (row, n) => rows[row].forEach((c, i) => { c.style.background = (n >> (7 - i)) & 1 ? "#fff" : "#000"; });
window.seen = (window.seen || 0) + 1;
const random = Math.floor(Math.random() * 256), value = (window.helios.props.value || 0) & 255;
function frame() {
  paint(0, Math.round(performance.now() * 30 / 1000));
  paint(1, random); paint(2, value); paint(3, window.seen);
  requestAnimationFrame(frame);
}
frame();
</script></body></html>
"""


def config(**kw: object) -> RenderConfig:
    return RenderConfig(input="index.html", width=W, height=H, fps=30, frame_count=6, **kw)


def composition(folder: Path, html: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(html)
    (folder / "sw.js").write_text("self.addEventListener('fetch', () => {});\n")
    return folder / "index.html"


@contextlib.contextmanager
def leak_site(folder: Path) -> Iterator[str]:
    """The leak composition at one fixed http origin while in use (storage is kept per origin)."""
    composition(folder, LEAK_HTML)
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with leak_site(tmp_path / "site") as url:
        yield url


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def warm() -> Iterator[WarmBrowser]:
    with WarmBrowser() as browser:
        yield browser


def render(location: str | Path, out: Path, start: int = 0, count: int = 3, warm: WarmBrowser | None = None, **kw):
    return render_range(
        config(**kw), input_location=str(location), start_frame=start, frame_count=count, output_path=out, warm=warm
    )


def bars(video: Path, rows: int = 1, bits: int = BITS) -> list[list[int]]:
    """Per frame, per row: the row's bars as 0/1 (white = 1)."""
    frames = decode(video, W, H)
    out = []
    for frame in frames:
        values = []
        for row in range(rows):
            y = int((row + 0.5) * H / rows)
            values.append([int(frame[y, int((bit + 0.5) * W / bits)].mean() > 128) for bit in range(bits)])
        out.append(values)
    return out


def leaks_seen(video: Path) -> list[str]:
    first = bars(video)[0][0]
    return [name for name, bit in zip(LEAKS, first, strict=True) if bit]


def frame_hashes(video: Path) -> list[str]:
    return [hashlib.sha256(frame.tobytes()).hexdigest() for frame in decode(video, W, H)]


@pytest.mark.render
def test_nothing_leaks_between_renders_at_one_origin_on_a_kept_tab(served: str, tmp_path: Path, warm) -> None:
    for attempt in range(3):
        out = tmp_path / f"leak-{attempt}.mp4"
        render(served, out, count=2, warm=warm)
        assert leaks_seen(out) == [], f"render {attempt} saw state of an earlier render"
    assert warm.launches == 1 and warm.tab_reuses == 2  # one browser, one tab, reset twice


@pytest.mark.render
def test_without_the_reset_the_probe_sees_the_state(served: str, tmp_path: Path, monkeypatch, warm) -> None:
    """The control: with a reset that only drops the init script and old events, each check fires."""
    from helios_kit.render import warm as warm_module

    def minimal_reset(tab, timeout: float) -> None:
        tab.page.send("Page.removeScriptToEvaluateOnNewDocument", {"identifier": tab.script_id})
        tab.page.clear_events()

    monkeypatch.setattr(warm_module, "_reset_tab", minimal_reset)
    render(served, tmp_path / "first.mp4", count=2, warm=warm)
    render(served, tmp_path / "second.mp4", count=2, warm=warm)
    assert leaks_seen(tmp_path / "first.mp4") == []
    # Every document starts with fresh globals: a page global can only leak if a tab were not re-navigated.
    assert leaks_seen(tmp_path / "second.mp4") == [name for name in LEAKS if name != "global"]


@pytest.mark.render
def test_local_composition_on_a_kept_tab_leaks_nothing(tmp_path: Path, warm) -> None:
    html = composition(tmp_path / "comp", LEAK_HTML)
    for attempt in range(2):
        out = tmp_path / f"local-{attempt}.mp4"
        render(html, out, count=2, warm=warm)
        assert leaks_seen(out) == []
    assert warm.launches == 1 and warm.tab_reuses == 1


@pytest.mark.render
def test_warm_frames_equal_cold_frames_and_a_b_a_equals_a_cold(tmp_path: Path, warm) -> None:
    html = composition(tmp_path / "state", STATE_HTML)
    a = {"props": {"value": 170}, "seed": 7}
    b = {"props": {"value": 85}, "seed": 99}
    cold_a = tmp_path / "cold-a.mp4"
    render(html, cold_a, start=4, count=3, **a)
    cold_b = tmp_path / "cold-b.mp4"
    render(html, cold_b, start=2, count=3, **b)

    warm_a1, warm_b, warm_a2 = tmp_path / "warm-a1.mp4", tmp_path / "warm-b.mp4", tmp_path / "warm-a2.mp4"
    render(html, warm_a1, start=4, count=3, warm=warm, **a)
    render(html, warm_b, start=2, count=3, warm=warm, **b)
    render(html, warm_a2, start=4, count=3, warm=warm, **a)
    assert warm.launches == 1 and warm.tab_reuses == 2

    rows = bars(cold_a, rows=4)
    assert [frame[0] for frame in rows] == [[0, 0, 0, 0, 0, 1, b, c] for b, c in ((0, 0), (0, 1), (1, 0))]
    assert rows[0][2] == [1, 0, 1, 0, 1, 0, 1, 0] and rows[0][3] == [0, 0, 0, 0, 0, 0, 0, 1]  # props 170, seen once
    assert bars(cold_b, rows=4)[0][2] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert frame_hashes(warm_a1) == frame_hashes(cold_a)
    assert frame_hashes(warm_b) == frame_hashes(cold_b)
    assert frame_hashes(warm_a2) == frame_hashes(cold_a)


@pytest.mark.render
def test_a_killed_browser_is_replaced(tmp_path: Path, warm) -> None:
    html = composition(tmp_path / "state", STATE_HTML)
    render(html, tmp_path / "one.mp4", warm=warm)
    first = warm.pid
    assert first is not None
    os.killpg(os.getpgid(first), signal.SIGKILL)
    render(html, tmp_path / "two.mp4", warm=warm)
    assert warm.launches == 2 and warm.pid != first
    assert frame_hashes(tmp_path / "two.mp4") == frame_hashes(tmp_path / "one.mp4")


@pytest.mark.render
def test_a_hung_browser_is_replaced(tmp_path: Path) -> None:
    html = composition(tmp_path / "state", STATE_HTML)
    with WarmBrowser() as warm:
        render(html, tmp_path / "one.mp4", warm=warm)
        warm.health_timeout_s = 1.0  # only now: it also bounds the tab reset after the first render
        hung = warm.pid
        assert hung is not None
        group = os.getpgid(hung)
        os.killpg(group, signal.SIGSTOP)  # alive but answering nothing
        try:
            render(html, tmp_path / "two.mp4", warm=warm)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)
        assert warm.launches == 2 and warm.pid != hung
        assert not _exists(hung)  # the hung browser was killed, not left behind
    assert frame_hashes(tmp_path / "two.mp4") == frame_hashes(tmp_path / "one.mp4")


@pytest.mark.render
def test_a_failed_render_never_leaves_its_browser_for_the_next(tmp_path: Path, warm) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.html").write_text("<script>throw new Error('boom')</script>")
    render(composition(tmp_path / "state", STATE_HTML), tmp_path / "ok.mp4", warm=warm)
    first = warm.pid
    with pytest.raises(Exception, match="boom"):
        render(broken / "index.html", tmp_path / "broken.mp4", warm=warm)
    assert warm.pid is None and first is not None and not _exists(first)
    render(composition(tmp_path / "state", STATE_HTML), tmp_path / "again.mp4", warm=warm)
    assert warm.launches == 2


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.render
def test_another_composition_gets_a_new_tab_in_a_new_context(tmp_path: Path, warm) -> None:
    state = composition(tmp_path / "state", STATE_HTML)
    leak = composition(tmp_path / "leak", LEAK_HTML)
    render(state, tmp_path / "cold.mp4")
    for index, html in enumerate((state, leak, state)):
        render(html, tmp_path / f"warm-{index}.mp4", warm=warm)
    assert warm.launches == 1 and warm.tab_reuses == 0
    assert warm._browser is not None and len(warm._browser.cdp._listeners) == 1  # old tabs no longer listen
    assert leaks_seen(tmp_path / "warm-1.mp4") == []
    assert frame_hashes(tmp_path / "warm-2.mp4") == frame_hashes(tmp_path / "cold.mp4")
