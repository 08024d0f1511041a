"""Small jobs for the cloud tests: a frame-index JobSpec and its upload to (moto) S3."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec

from helios_kit.planner import plan_job
from helios_kit.spec import JobSpec, RenderConfig, dumps

#: A composition that paints its frame index as 10 binary bars (white = 1, MSB left) from rAF +
#: performance.now(), matching :func:`fakes.renders.decode_frame_indexes`; rendered at FPS.
FPS = 24
HTML = """<!doctype html>
<html><head><meta charset="utf-8"><style>html,body{margin:0;background:#000;overflow:hidden}canvas{display:block}
</style></head><body><canvas id="c"></canvas><script>
  const fps = FPS_VALUE, bits = 10, c = document.getElementById("c");
  c.width = innerWidth; c.height = innerHeight;
  const g = c.getContext("2d"), bar = Math.floor(c.width / bits);
  function draw() {
    const n = Math.round(performance.now() * fps / 1000);
    g.fillStyle = "#000"; g.fillRect(0, 0, c.width, c.height);
    g.fillStyle = "#fff";
    for (let i = 0; i < bits; i++) if ((n >> (bits - 1 - i)) & 1) g.fillRect(i * bar, 0, bar, c.height);
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
</script></body></html>
""".replace("FPS_VALUE", str(FPS))


def make_spec(frames: int = 24, chunks: int = 4, job_id: str = "cloud-job") -> JobSpec:
    config = RenderConfig(input="index.html", width=160, height=120, fps=FPS, frame_count=frames)
    return plan_job(config, concurrency=chunks, job_id=job_id)


def upload_job(spec: JobSpec, prefix: str = "s3://renders/jobs") -> str:
    """Put job.json and its composition under `prefix`; returns the job URL."""
    fs = fsspec.filesystem("s3")
    base = prefix.removeprefix("s3://")
    with fs.open(f"{base}/index.html", "wb") as handle:
        handle.write(HTML.encode())
    with fs.open(f"{base}/job.json", "wb") as handle:
        handle.write(dumps(spec).encode())
    return f"{prefix}/job.json"


#: The tests folder: runner processes import the fakes from it.
TESTS_DIR = Path(__file__).resolve().parents[1]


def runner_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `helios job run` subprocess whose workers render with the counting fake render
    (each render logged to tmp_path/renders.log), with `extra` on top."""
    path = os.environ.get("PYTHONPATH", "")
    env = {
        **os.environ,
        "HELIOS_HOME": str(tmp_path / "home"),
        "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{path}" if path else str(TESTS_DIR),
        "HELIOS_WORKER_RENDER": "fakes.counting:counting_render",
        "HELIOS_FAKE_RENDER_LOG": str(tmp_path / "renders.log"),
    }
    env.pop("HELIOS_FAKE_RENDER_SLEEP", None)
    env.update(extra)
    return env
