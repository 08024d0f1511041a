"""End to end with real Chromium and ffmpeg: job files in the shapes of the original Helios CLI load, run with
`helios job run` and merge frame-exact. Chunks are `.mov` files (as the original names them) joined by stream
copy into the job's `.mp4`; the composition is a canvas (the original's default `--mode canvas`) that
paints its frame index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.cloudjobs import FPS, HTML
from fakes.renders import decode_frame_indexes

W, H, FRAMES = 320, 240, 6


def original_emit_job() -> dict:
    """Byte for byte what `helios render comp.html --emit-job job.json --width 320 --height 240 --fps 24
    --frame-count 6 --concurrency 2 -o out.mp4` of @helios-project/cli 0.45.2 writes (its temp prefix aside)."""
    flags = f"--width {W} --height {H} --fps {FPS} --mode canvas --audio-codec pcm_s16le"
    chunks = []
    for i in range(2):
        out = f"temp_1796197802096_88hpjp_part_{i}.mov"
        command = f"helios render comp.html -o {out} --start-frame {3 * i} --frame-count 3 {flags}"
        chunks.append({"id": i, "startFrame": 3 * i, "frameCount": 3, "outputFile": out, "command": command})
    return {
        "metadata": {"totalFrames": FRAMES, "fps": FPS, "width": W, "height": H, "duration": FRAMES / FPS},
        "chunks": chunks,
        "mergeCommand": "helios merge out.mp4 " + " ".join(chunk["outputFile"] for chunk in chunks),
    }


def config_partitions_job() -> dict:
    """The `config` (CLI options plus input, extra keys) + `partitions` + `merge.command` shape."""
    base = f"--width {W} --height {H} --fps {FPS} --mode canvas --audio-codec pcm_s16le --no-headless"
    partitions = [
        {"command": f"helios render comp.html -o chunk_{i}.mov --start-frame {3 * i} --frame-count 3 {base}"}
        for i in range(2)
    ]
    config = {
        "input": "comp.html",
        "output": "out.mp4",
        "width": str(W),
        "height": str(H),
        "fps": str(FPS),
        "frameCount": str(FRAMES),
        "mode": "canvas",
        "concurrency": "2",
        "emitJob": "job.json",
        "quality": "18",
        "headless": False,
    }
    return {
        "config": config,
        "partitions": partitions,
        "merge": {"command": "helios merge out.mp4 chunk_0.mov chunk_1.mov"},
    }


def probe_format(path: Path) -> str:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.render
@pytest.mark.parametrize(
    "make", [original_emit_job, config_partitions_job], ids=["metadata-chunks", "config-partitions"]
)
def test_original_job_file_runs_and_merges_frame_exact(tmp_path: Path, make) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "comp.html").write_text(HTML)
    data = make()
    (folder / "job.json").write_text(json.dumps(data, indent=2))
    env = dict(os.environ, HELIOS_HOME=str(tmp_path / "home"))
    env.pop("HELIOS_WORKER_RENDER", None)
    result = subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", "job", "run", "job.json", "--quiet", "--concurrency", "2"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = folder / "out.mp4"
    assert result.stdout.strip().splitlines()[-1] == (
        f"2 chunks: 2 rendered, 0 skipped (complete), 0 failed; merged → {out} ({FRAMES} frames, 0.250 s)"
    )
    chunk_files = sorted(folder.glob("*.mov"))
    assert len(chunk_files) == 2
    assert all(path.suffix == ".mov" and "mov" in probe_format(path) for path in chunk_files)
    assert "mp4" in probe_format(out)
    assert decode_frame_indexes(out, W, H) == list(range(FRAMES))
