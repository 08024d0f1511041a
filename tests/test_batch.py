"""`helios batch` end to end with real Chromium and ffmpeg (64x48, 2 frames per video): one video per row;
re-runs skip unchanged videos without rewriting them; an edited row re-renders only its video; a removed
row leaves its video alone; a failing row does not stop the others; kill -9 resumes with what is missing;
an asset prop (a file next to the rows) is loaded and counts; --emit-batch writes job files and an index."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes.loopback import LoopbackHTTPServer

from helios_kit.spec import load

pytestmark = pytest.mark.render

TEMPLATE = """<!doctype html>
<html><head>
<meta name="helios" content='{"width": 64, "height": 48, "fps": 10, "duration": 0.2,
  "props": {"color": "#0000ff"}}'>
<style>html,body{margin:0}#box,img{position:absolute;inset:0;width:64px;height:48px}</style></head>
<body><div id="box"></div><script>
  const props = window.helios.props;
  if (props.fail) throw new Error("row asked to fail");
  document.getElementById("box").style.background = props.color;
  if (props.photo) { const img = document.createElement("img"); img.src = props.photo; document.body.append(img); }
</script></body></html>
"""

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def helios(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def centre(video: Path) -> tuple[int, ...]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    frame = np.frombuffer(raw, np.uint8).reshape(48, 64, 3)
    return tuple(int(v) for v in frame[24, 32])


def close(rgb: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 24 for a, b in zip(rgb, expected, strict=True))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "index.html").write_text(TEMPLATE)
    return tmp_path


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*.mp4")}


def test_rows_render_then_skip_then_only_the_edited_row_and_a_removed_row_stays(project: Path) -> None:
    rows = project / "rows.csv"
    rows.write_text("id,color\na,#ff0000\nb,#00ff00\nc,#0000ff\n")
    first = helios("batch", "card", "rows.csv", "-o", "out/{id}.mp4", "-j", "2", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "3 videos: 3 rendered, 0 skipped (up to date), 0 failed" in first.stdout
    out = project / "out"
    assert [close(centre(out / f"{v}.mp4"), c) for v, c in (("a", RED), ("b", GREEN), ("c", BLUE))] == [True] * 3
    before = mtimes(out)

    again = helios("batch", "card", "rows.csv", "-o", "out/{id}.mp4", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "3 videos: 0 rendered, 3 skipped (up to date), 0 failed" in again.stdout
    assert mtimes(out) == before  # not rewritten

    rows.write_text("id,color\na,#ff0000\nb,#0000ff\n")  # b edited, c removed
    edited = helios("batch", "card", "rows.csv", "-o", "out/{id}.mp4", cwd=project)
    assert edited.returncode == 0, edited.stderr
    assert "2 videos: 1 rendered, 1 skipped (up to date), 0 failed" in edited.stdout
    after = mtimes(out)
    assert after["a.mp4"] == before["a.mp4"] and after["c.mp4"] == before["c.mp4"]
    assert after["b.mp4"] != before["b.mp4"]
    assert close(centre(out / "b.mp4"), BLUE) and close(centre(out / "c.mp4"), BLUE)


def test_a_failing_row_does_not_stop_the_others_and_the_exit_code_says_so(project: Path) -> None:
    (project / "rows.jsonl").write_text(
        '{"id": "ok1", "color": "#ff0000"}\n{"id": "bad", "fail": true}\n{"id": "ok2", "color": "#00ff00"}\n'
    )
    result = helios("batch", "card", "rows.jsonl", "-o", "out/{id}.mp4", "--retries", "0", cwd=project)
    assert result.returncode == 1
    assert "3 videos: 2 rendered, 0 skipped (up to date), 1 failed" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "row 1 (rows.jsonl line 2)" in errors[0] and "row asked to fail" in errors[0]
    assert "Traceback" not in result.stderr
    assert close(centre(project / "out" / "ok1.mp4"), RED) and close(centre(project / "out" / "ok2.mp4"), GREEN)
    assert not (project / "out" / "bad.mp4").exists()


def test_two_rows_to_one_output_is_an_error_naming_both(project: Path) -> None:
    (project / "rows.csv").write_text("id,color\nx,#ff0000\ny,#00ff00\nx,#0000ff\n")
    result = helios("batch", "card", "rows.csv", "-o", "out/{id}.mp4", cwd=project)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "row 0 (rows.csv line 2) and row 2 (rows.csv line 4) both map to x.mp4" in result.stderr
    assert not (project / "out").exists() or not list((project / "out").glob("*.mp4"))


def test_kill_9_then_the_rerun_renders_only_what_was_missing(project: Path) -> None:
    names = [f"v{index}" for index in range(12)]  # enough that the batch cannot finish before the kill lands
    (project / "rows.csv").write_text("id,color\n" + "".join(f"{name},#ff0000\n" for name in names))
    out = project / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "helios_kit.cli", "batch", "card", "rows.csv", "-o", "out/{id}.mp4", "-j", "1"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # wait for the event "one video committed" (its manifest is written last), then kill -9 the batch
        while not list(out.glob("*.mp4.done.json")) and proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        assert proc.poll() is None, "the batch ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = {path.name.removesuffix(".done.json") for path in out.glob("*.mp4.done.json")}
    chunks = {path: path.stat().st_mtime_ns for path in (out / ".helios/batch/chunks").rglob("*.done.json")}
    assert 1 <= len(done) < len(names)
    before = {name: (out / name).stat().st_mtime_ns for name in done}

    rerun = helios("batch", "card", "rows.csv", "-o", "out/{id}.mp4", "-j", "1", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    missing = len(names) - len(done)
    assert f"{len(names)} videos: {missing} rendered, {len(done)} skipped (up to date), 0 failed" in rerun.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in done} == before
    assert {path: path.stat().st_mtime_ns for path in chunks} == chunks  # complete chunks were not rendered again
    assert sorted(path.name for path in out.glob("*.mp4")) == sorted(f"{name}.mp4" for name in names)


def test_an_asset_prop_next_to_the_rows_is_loaded_and_counts(project: Path) -> None:
    data = project / "data"
    data.mkdir()
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48" fill="{}"/>'
    svg += "</svg>"
    (data / "a.svg").write_text(svg.format("#00ff00"))
    (data / "b.svg").write_text(svg.format("#ff0000"))
    (data / "rows.jsonl").write_text('{"id": "a", "photo": "a.svg"}\n{"id": "b", "photo": "b.svg"}\n')
    first = helios("batch", "card", "data/rows.jsonl", "-o", "out/{id}.mp4", cwd=project)
    assert first.returncode == 0, first.stderr
    assert close(centre(project / "out/a.mp4"), GREEN) and close(centre(project / "out/b.mp4"), RED)
    b_before = (project / "out/b.mp4").stat().st_mtime_ns

    (data / "a.svg").write_text(svg.format("#0000ff"))  # the asset changed: its video, only it, renders again
    second = helios("batch", "card", "data/rows.jsonl", "-o", "out/{id}.mp4", cwd=project)
    assert second.returncode == 0, second.stderr
    assert "2 videos: 1 rendered, 1 skipped (up to date), 0 failed" in second.stdout
    assert close(centre(project / "out/a.mp4"), BLUE)
    assert (project / "out/b.mp4").stat().st_mtime_ns == b_before


def test_an_asset_prop_naming_a_url_is_loaded_and_counts(project: Path) -> None:
    """A prop naming an http(s) URL is an asset like a file: the page loads it, the render records it (its
    ETag or body hash), and when the server's answer changes only the video that shows it renders again."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler

    assets = project / "cdn"
    assets.mkdir()
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48" fill="{}"/>'
    svg += "</svg>"
    (assets / "a.svg").write_text(svg.format("#00ff00"))
    (assets / "b.svg").write_text(svg.format("#ff0000"))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(assets))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rows = f'{{"id": "a", "photo": "{base}/a.svg"}}\n{{"id": "b", "photo": "{base}/b.svg"}}\n'
        (project / "rows.jsonl").write_text(rows)
        first = helios("batch", "card", "rows.jsonl", "-o", "out/{id}.mp4", cwd=project)
        assert first.returncode == 0, first.stderr
        assert close(centre(project / "out/a.mp4"), GREEN) and close(centre(project / "out/b.mp4"), RED)
        b_before = (project / "out/b.mp4").stat().st_mtime_ns
        again = helios("batch", "card", "rows.jsonl", "-o", "out/{id}.mp4", cwd=project)
        assert "2 videos: 0 rendered, 2 skipped (up to date), 0 failed" in again.stdout, again.stdout

        (assets / "a.svg").write_text(svg.format("#0000ff"))  # the server's answer changed: only its video
        second = helios("batch", "card", "rows.jsonl", "-o", "out/{id}.mp4", cwd=project)
        assert second.returncode == 0, second.stderr
        assert "2 videos: 1 rendered, 1 skipped (up to date), 0 failed" in second.stdout, second.stdout
        assert close(centre(project / "out/a.mp4"), BLUE)
        assert (project / "out/b.mp4").stat().st_mtime_ns == b_before
    finally:
        server.shutdown()
        server.server_close()


def test_emit_batch_writes_a_job_per_row_and_an_index(project: Path) -> None:
    (project / "rows.csv").write_text("id,color\na,#ff0000\nb,#00ff00\n")
    result = helios("batch", "card", "rows.csv", "-o", "videos/{id}.mp4", "--emit-batch", "jobs", cwd=project)
    assert result.returncode == 0, result.stderr
    index = json.loads((project / "jobs" / "batch.json").read_text())
    assert [entry["output"] for entry in index["jobs"]] == ["videos/a.mp4", "videos/b.mp4"]
    specs = [load(project / "jobs" / entry["jobFile"]) for entry in index["jobs"]]
    assert [spec.config.props["color"] for spec in specs] == ["#ff0000", "#00ff00"]
    assert all((project / "jobs" / spec.config.input).resolve() == project / "card" / "index.html" for spec in specs)
    run = helios("job", "run", "jobs/" + index["jobs"][1]["jobFile"], "-q", cwd=project)
    assert run.returncode == 0, run.stderr
    assert close(centre(project / "jobs" / "videos" / "b.mp4"), GREEN)


def test_the_example_batch_renders_incrementally_with_doit(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "batch"
    folder = tmp_path / "batch"
    shutil.copytree(example, folder, ignore=shutil.ignore_patterns("out", ".doit.db*", "__pycache__"))
    dodo = (folder / "dodo.py").read_text()
    (folder / "dodo.py").write_text(
        dodo.replace("SETTINGS: dict = {}", 'SETTINGS = {"width": 64, "height": 48, "frame_count": 2}')
    )
    (folder / "rows.csv").write_text("id,name,score,color\nada,Ada,42,#ff0000\nbo,Bo,17,#00ff00\n")
    doit = [sys.executable, "-m", "doit", "render"]
    first = subprocess.run(doit, cwd=folder, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert close(centre(folder / "out" / "ada.mp4"), RED) and close(centre(folder / "out" / "bo.mp4"), GREEN)
    before = mtimes(folder / "out")
    second = subprocess.run(doit, cwd=folder, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "-- video-ada-" in second.stdout and ".  video-" not in second.stdout  # every task up to date
    assert mtimes(folder / "out") == before
