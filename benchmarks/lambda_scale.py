"""Lambda fan-out at scale: N chunks at concurrency C through the real boto3 client and the Invoke-API emulator.

Each invocation lasts at least `--latency` seconds in the emulator. Two runs: a no-op handler (what one
client can keep in flight: boto3 threads, connection pool, retries) and the real handler (load the spec,
check the store, a fake render writing a tiny file, commit with manifest) — on this machine all handler
processes share its few cores, unlike Lambda where each invocation has its own, so the second ratio also
measures the local CPU. The ideal wall time is ceil(N / C) waves * latency; the script prints each measured
time and its ratio to that ideal.

    .venv/bin/python benchmarks/lambda_scale.py --chunks 200 --concurrency 100 --latency 0.5

Runs entirely on 127.0.0.1. By default (`--client cli`) the measured client is the real one: `helios job run
--backend lambda` in a subprocess, job and store on S3 (moto behind a request counter), the emulator running
the real handler with a fake render (`fakes.counting:template_render`, a copied tiny video): it prints the
fan-out's wall time against the ideal and the client's CPU time, the merge next to the store, and a no-op
re-run's time and S3 requests. `--client stand-in` is the older measurement of the executor alone (local job
and store).
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


class CountingS3:
    """moto's S3 on 127.0.0.1 behind a WSGI wrapper that counts requests (method, first path segments)."""

    def __init__(self) -> None:
        from collections import Counter

        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self.requests: Counter[str] = Counter()

        def counting(environ: dict, start_response: object) -> object:
            path = environ.get("PATH_INFO", "")
            self.requests[f"{environ['REQUEST_METHOD']} {'/'.join(path.split('/')[:3])}"] += 1
            return app(environ, start_response)  # type: ignore[arg-type]

        self.server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, prefix: str) -> int:
        return sum(n for key, n in self.requests.items() if key.split(" ", 1)[1].startswith(prefix))


def measure_cli(chunks: int, concurrency: int, latency: float, workers: int) -> None:
    """`helios job run --backend lambda` (the real client, a subprocess) with an S3 store on moto, the emulator
    running the real handler with a fake render; then the merge (next to the store), then a no-op re-run
    with S3 requests counted."""
    import resource
    import subprocess
    import time

    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from fakes.aws import aws_env
    from fakes.cloudjobs import upload_job
    from fakes.lambda_emulator import LambdaEmulator

    from helios_kit.planner import plan_job
    from helios_kit.spec import RenderConfig

    s3 = CountingS3()
    os.environ.update(aws_env(s3.endpoint))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    os.environ["HELIOS_WORKER_RENDER"] = "fakes.counting:template_render"
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="bench")
    config = RenderConfig(input="index.html", width=32, height=32, fps=30, frame_count=chunks)
    url = upload_job(plan_job(config, chunk_frames=1, job_id="fanout"), "s3://bench/jobs/fanout")
    store = "s3://bench/out/fanout"
    with (
        tempfile.TemporaryDirectory(prefix="helios-fanout-") as tmp,
        LambdaEmulator(latency=latency, workers=workers) as emulator,
    ):
        env = {**os.environ, "HELIOS_HOME": str(Path(tmp) / "home")}
        base = [
            sys.executable, "-m", "helios_kit.cli", "job", "run", url, "--backend", "lambda",
            "--function", emulator.function_name, "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1",
            "--store", store, "--concurrency", str(concurrency), "--quiet", "--retry-delay", "0.1",
        ]  # fmt: skip

        def timed(*more: str) -> tuple[float, float, str]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run([*base, *more], env=env, capture_output=True, text=True, check=False, cwd=tmp)
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise SystemExit(f"helios job run failed: {done.stdout}{done.stderr}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return elapsed, cpu, done.stdout.strip().splitlines()[-1]

        ideal = math.ceil(chunks / concurrency) * latency
        elapsed, cpu, line = timed("--no-merge")
        print(
            f"fan-out through `helios job run --backend lambda` (S3 store on moto, real handler, fake render): "
            f"{chunks} chunks, concurrency {concurrency}, latency {latency:g} s: {elapsed:.2f} s (ideal "
            f"{ideal:.2f} s, ratio {elapsed / ideal:.2f}), client CPU {cpu:.2f} s, max in flight "
            f"{emulator.max_in_flight}; {line}"
        )
        elapsed, cpu, line = timed()
        print(f"merge next to the store (every chunk complete): {elapsed:.2f} s, client CPU {cpu:.2f} s; {line}")
        s3.requests.clear()
        elapsed, cpu, line = timed()
        total = sum(s3.requests.values())
        on_store = s3.count("/bench/out")
        print(
            f"no-op re-run of the finished {chunks}-chunk job: {elapsed:.2f} s (client CPU {cpu:.2f} s), "
            f"{total} S3 requests ({on_store} on the store: {dict(sorted(s3.requests.items()))}); {line}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=4, help="Handler processes in the emulator.")
    parser.add_argument(
        "--client",
        choices=["cli", "stand-in"],
        default="cli",
        help="cli: the real `helios job run` with an S3 store (moto); stand-in: the executor alone.",
    )
    args = parser.parse_args()
    if args.client == "cli":
        measure_cli(args.chunks, args.concurrency, args.latency, args.workers)
        return
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
