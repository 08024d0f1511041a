"""Straggler backups: `helios job run --backend lambda` against the Invoke-API emulator (tests/fakes), 100
chunks, every invocation `--latency` seconds, and one invocation (the first of chunk `--slow-chunk`) 20x slower.

Three runs of the real client (a `helios job run` subprocess): no straggler; the straggler with backups (the
default for remote backends: once 75% of chunks are done, a chunk running past 1.5 x the median gets a backup
attempt); the straggler with `--no-backups`. Prints each wall time and the ratio of the second to the first
(the goal: <= 1.5).

    .venv/bin/python benchmarks/straggler.py --chunks 100 --concurrency 20 --latency 1.0

The handler is the real one (load the spec, check the store, commit with its manifest) with a fake render
(`fakes.renders:bytes_render`); job and store are local folders; nothing leaves 127.0.0.1. Renders only:
`--no-merge` (the fake chunks are not videos).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def run_once(chunks: int, concurrency: int, latency: float, slow: dict[int, float], *flags: str) -> float:
    """One `helios job run` on a fresh job; returns its wall time."""
    from fakes.lambda_emulator import LambdaEmulator

    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig, dump

    with tempfile.TemporaryDirectory(prefix="helios-straggler-") as tmp:
        root = Path(tmp)
        (root / "index.html").write_text("<!doctype html><body>straggler</body>")
        config = RenderConfig(input="index.html", width=16, height=16, fps=30, frame_count=chunks)
        dump(plan_job(config, chunk_frames=1, job_id="straggler"), root / "job.json")
        with LambdaEmulator(latency=latency, workers=4, first_delays=dict(slow)) as emulator:
            argv = [
                sys.executable, "-m", "helios_kit.cli", "job", "run", str(root / "job.json"),
                "--backend", "lambda", "--function", emulator.function_name,
                "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1",
                "--concurrency", str(concurrency), "--no-merge", "--quiet", "--retry-delay", "0.1", *flags,
            ]  # fmt: skip
            env = {**os.environ, "HELIOS_HOME": str(root / "home")}
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - started
        if done.returncode != 0 or f"{chunks} rendered" not in done.stdout:
            raise SystemExit(f"run failed: {done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--slow-chunk", type=int, default=50)
    parser.add_argument("--slowdown", type=float, default=20.0)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    os.environ["HELIOS_WORKER_RENDER"] = "fakes.renders:bytes_render"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ.setdefault(key, value)
    slow = {args.slow_chunk: (args.slowdown - 1) * args.latency}
    base = run_once(args.chunks, args.concurrency, args.latency, {})
    backed = run_once(args.chunks, args.concurrency, args.latency, slow)
    plain = run_once(args.chunks, args.concurrency, args.latency, slow, "--no-backups")
    what = f"{args.chunks} chunks, concurrency {args.concurrency}, {args.latency:g} s per invocation"
    print(f"straggler, {what}: no straggler {base:.2f} s")
    print(
        f"straggler, {what}: one invocation {args.slowdown:g}x slower: with backups {backed:.2f} s "
        f"(ratio {backed / base:.2f} to no straggler), without backups {plain:.2f} s (ratio {plain / base:.2f})"
    )


if __name__ == "__main__":
    main()
