"""Lambda fan-out at scale: N chunks at concurrency C through the real boto3 client and the Invoke-API emulator.

Each invocation lasts at least `--latency` seconds in the emulator. Two runs: a no-op handler (what one
client can keep in flight: boto3 threads, connection pool, retries) and the real handler (load the spec,
check the store, a fake render writing a tiny file, commit with manifest) — on this machine all handler
processes share its few cores, unlike Lambda where each invocation has its own, so the second ratio also
measures the local CPU. The ideal wall time is ceil(N / C) waves * latency; the script prints each measured
time and its ratio to that ideal.

    .venv/bin/python benchmarks/lambda_scale.py --chunks 200 --concurrency 100 --latency 0.5

Runs entirely on 127.0.0.1 (a local job folder and a local store; no S3 needed for this measurement).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def measure(
    chunks: int,
    concurrency: int,
    latency: float,
    workers: int = 4,
    handler: str = "worker",
    gather: int = 0,
) -> dict[str, float]:
    """Run the fan-out once; returns elapsed, ideal, ratio and the emulator's max in-flight count."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    os.environ["HELIOS_WORKER_RENDER"] = "fakes.renders:bytes_render"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ.setdefault(key, value)

    import logging

    from fakes.drive import drive
    from fakes.lambda_emulator import LambdaEmulator
    from helios_lambda.backend import LambdaBackend, LambdaOptions

    from helios_kit.backends.base import ChunkContext
    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig, dump

    logging.getLogger("helios.lambda").setLevel(logging.ERROR)  # local paths are fine here
    with tempfile.TemporaryDirectory(prefix="helios-scale-") as tmp:
        root = Path(tmp)
        (root / "index.html").write_text("<!doctype html><body>scale</body>")
        config = RenderConfig(input="index.html", width=16, height=16, fps=30, frame_count=chunks)
        spec = plan_job(config, chunk_frames=1, job_id="scale")
        dump(spec, root / "job.json")
        context = ChunkContext(job_url=str(root / "job.json"), job_dir=str(root), store_url=str(root / "store"))
        reference = "helios_lambda.handler:handler" if handler == "worker" else "fakes.lambda_emulator:noop_handler"
        with (
            LambdaEmulator(handler=reference, latency=latency, workers=workers, gather=gather) as emulator,
            LambdaBackend(
                LambdaOptions(
                    function=emulator.function_name,
                    endpoint_url=emulator.endpoint_url,
                    region="us-east-1",
                    max_connections=concurrency + 10,
                )
            ) as backend,
        ):
            report = drive(backend, spec, context, concurrency=concurrency, retries=3)
            in_flight = emulator.max_in_flight
        failed = report.failed
        if failed:
            raise SystemExit(f"{len(failed)} chunks failed, e.g. {report.results[failed[0]].stderr}")
        done = sum(1 for p in (root / "store").rglob("*.done.json")) if (root / "store").exists() else 0
    ideal = math.ceil(chunks / concurrency) * latency
    return {
        "elapsed": report.elapsed_s,
        "ideal": ideal,
        "ratio": report.elapsed_s / ideal,
        "max_in_flight": in_flight,
        "committed": done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=4, help="Handler processes in the emulator.")
    args = parser.parse_args()
    for handler, what in (
        ("noop", "client fan-out (no-op handler)"),
        ("worker", "real handler (WorkerRuntime + fake render + commit, on this machine's CPUs)"),
    ):
        stats = measure(args.chunks, args.concurrency, args.latency, args.workers, handler)
        print(
            f"lambda scale, {what}: {args.chunks} chunks, concurrency {args.concurrency}, latency "
            f"{args.latency:g} s: {stats['elapsed']:.2f} s (ideal {stats['ideal']:.2f} s, "
            f"ratio {stats['ratio']:.2f}), "
            f"max in flight {stats['max_in_flight']}, {stats['committed']} chunks committed"
        )


if __name__ == "__main__":
    main()
