"""No-op re-run benchmark: `helios job run` on a finished job in a new interpreter, for 1,000 and 10,000
chunks, with a clean composition folder and with 200 MB of unrelated footage beside the composition.

    python benchmarks/noop_rerun.py [--chunks 1000,10000] [--footage-mb 200]

Each committed chunk records the dependencies a real render of the composition records (its HTML, a
stylesheet and an image), so the re-run checks what a real one checks. Prints the best of 3 runs per case.
Runs against older code too (no dependency lists there: it hashes the whole folder instead).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dump
from helios_kit.store import ArtifactStore

try:  # where JobContext lives moved over time (the script also measures older code)
    from helios_kit.context import JobContext
except ImportError:
    from helios_kit.dag import JobContext  # type: ignore[no-redef,attr-defined]

COMPOSITION = {
    "index.html": '<!doctype html><link rel="stylesheet" href="style.css"><img src="logo.svg">',
    "style.css": "body{margin:0;background:#123}",
    "logo.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
}


def finished_job(folder: Path, chunks: int, footage_mb: int) -> Path:
    comp = folder / "comp"
    comp.mkdir(parents=True)
    for name, text in COMPOSITION.items():
        (comp / name).write_text(text)
    if footage_mb:
        with open(comp / "footage.mov", "wb") as handle:
            for _ in range(footage_mb):
                handle.write(os.urandom(1 << 20))
    config = RenderConfig(input="comp/index.html", width=160, height=120, fps=30, frame_count=chunks, output="out.mp4")
    job = folder / "job.json"
    spec = plan_job(config, concurrency=chunks, job_id="noop")
    dump(spec, job)
    ctx = JobContext.prepare(spec, str(job), folder)
    extra = {}
    if "dependencies" in inspect.signature(ArtifactStore.commit).parameters:
        from helios_kit.composition.deps import file_dependency

        extra["dependencies"] = [file_dependency(comp, name) for name in COMPOSITION]
    tiny = folder / "tiny.bin"
    tiny.write_bytes(b"x")
    for chunk in spec.chunks:
        ctx.store.commit(
            tiny,
            chunk.output_file,
            digest=ctx.digest(chunk),
            job_id=spec.job_id,
            frame_count=chunk.frame_count,
            chunk_id=chunk.id,
            **extra,
        )
    merged = folder / "merged.bin"
    merged.write_bytes(b"merged")
    digest = ctx.merge_digest(ctx.input_manifests())
    ctx.store.commit(merged, spec.merge.output_file, digest=digest, job_id=spec.job_id, frame_count=chunks)
    return job


def best_rerun(job: Path, chunks: int, home: Path) -> list[float]:
    env = dict(os.environ, HELIOS_HOME=str(home))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "helios_kit.cli", "job", "run", str(job), "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        timings.append(time.perf_counter() - started)
        if result.returncode != 0 or f"0 rendered, {chunks} skipped" not in result.stdout:
            raise SystemExit(f"unexpected re-run result: {result.stdout}{result.stderr}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="1000,10000")
    parser.add_argument("--footage-mb", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="helios-noop-"))
    try:
        for chunks in (int(value) for value in args.chunks.split(",")):
            for footage in (0, args.footage_mb):
                folder = tmp / f"{chunks}-{footage}"
                job = finished_job(folder, chunks, footage)
                timings = best_rerun(job, chunks, tmp / "home")
                where = f"{footage} MB of unrelated footage beside it" if footage else "a clean folder"
                print(
                    f"no-op re-run, {chunks:,} chunks, {where}: best {min(timings):.2f} s "
                    f"(runs {', '.join(f'{t:.2f}' for t in timings)} s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
