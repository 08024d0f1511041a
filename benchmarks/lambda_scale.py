"""Lambda fan-out at scale: N chunks at concurrency C through the real boto3 client and the Invoke-API emulator.

Each invocation lasts at least `--latency` seconds in the emulator. With `--client stand-in`, two runs: a
no-op handler (what one client can keep in flight: boto3 threads, connection pool, retries) and the real
handler (load the spec, check the store, a fake render writing a tiny file, commit with manifest) — on this
machine all handler processes share its few cores, unlike Lambda where each invocation has its own, so the
second ratio also measures the local CPU. The ideal wall time is ceil(N / C) waves * latency; the script
prints each measured time and its ratio to that ideal.

    .venv/bin/python benchmarks/lambda_scale.py --chunks 200 --concurrency 100 --latency 0.5

Runs entirely on 127.0.0.1. By default (`--client cli`) the measured client is the real one: `helios job run
--backend lambda` in a subprocess, job and store on S3 (moto behind a request counter), the emulator running
the real handler with a fake render (`fakes.counting:template_render`, a copied tiny video) in handler hosts
that hold every invocation at once (`--pool threads`; `--pool processes` runs `--workers` at a time). It
prints, each with its ratio to the ideal: the fan-out's wall time, the client's CPU time (user + sys of the
`helios job run` process) and its S3 requests per chunk by kind, the handlers' requests per chunk; a no-op
re-run's time, requests and how many of them ran at once; the floor (a trivial client: threads calling
boto3 invoke, against the same emulator, handler and moto) and the client alone (the same `helios job run`
against a no-op handler: no store work or render in the handlers). On a machine whose cores the stand-ins
share with the client, the floor says what no client could beat there. `--client stand-in` is the older
measurement of the executor alone (local job and store).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

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


CLIENT_APP, HANDLER_APP = "helios-client", "helios-handler"  # user-agent tags telling callers apart


class FanOut:
    """One fan-out measurement: S3 on moto behind a request counter, a job uploaded to it, the Lambda emulator
    running the real handler (fake render) in `workers` processes or (threads) handler hosts."""

    def __init__(self, chunks: int, concurrency: int, latency: float, workers: int, threads: bool) -> None:
        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        from fakes.aws import CountingS3, aws_env
        from fakes.cloudjobs import upload_job

        from helios_kit.planner import plan_job
        from helios_kit.spec import RenderConfig

        self.chunks, self.concurrency, self.latency = chunks, concurrency, latency
        self.last_sys = 0.0
        self.profile: str | None = None  # py-spy's output for the fan-out's client (--profile)
        self.s3 = CountingS3()
        os.environ.update(aws_env(self.s3.endpoint))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        os.environ["HELIOS_WORKER_RENDER"] = "fakes.counting:template_render"
        os.environ["AWS_SDK_UA_APP_ID"] = HANDLER_APP  # the emulator's handlers inherit it
        import boto3
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # a cached instance would still point at an earlier endpoint

        boto3.client("s3", endpoint_url=self.s3.endpoint).create_bucket(Bucket="bench")
        config = RenderConfig(input="index.html", width=32, height=32, fps=30, frame_count=chunks)
        self.job_url = upload_job(plan_job(config, chunk_frames=1, job_id="fanout"), "s3://bench/jobs/fanout")
        self.workers, self.threads = workers, threads
        self.ideal = math.ceil(chunks / concurrency) * latency

    def timed(self, argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, str]:
        """Run `argv` (a client process); its wall time, CPU time (user + sys) and last line of output."""
        import resource
        import subprocess
        import time

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=cwd)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:6])} failed: {done.stdout}{done.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.last_sys = after.ru_stime - before.ru_stime  # the kernel's share (thread switches, sockets)
        lines = done.stdout.strip().splitlines()
        return elapsed, cpu, lines[-1] if lines else ""

    def per_chunk(self, caller: str) -> str:
        kinds = self.s3.by_kind(caller)
        total = sum(kinds.values())
        parts = ", ".join(f"{kind} {count / self.chunks:.2f}" for kind, count in kinds.items())
        return f"{total / self.chunks:.2f} per chunk ({parts})"

    def close(self) -> None:
        self.s3.close()


def target_args(emulator: Any) -> list[str]:
    return ["--function", emulator.function_name, "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1"]


def client_argv(job_url: str, emulator: Any, store: str, concurrency: int) -> list[str]:
    """`helios job run --backend lambda` against `emulator` with an S3 store."""
    return [
        sys.executable, "-m", "helios_kit.cli", "job", "run", job_url, "--backend", "lambda", *target_args(emulator),
        "--store", store, "--concurrency", str(concurrency), "--quiet", "--retry-delay", "0.1",
    ]  # fmt: skip


def profiled(path: str | None) -> list[str]:
    """The py-spy prefix sampling the client (collapsed stacks of the thread holding the GIL, to `path`; py-spy's
    CPU then counts as the client's), or nothing."""
    if not path:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    return [str(spy), "record", "--format", "raw", "--rate", "100", "--gil", "-o", path, "--"]


def fan_out(bench: FanOut, emulator: Any, env: dict[str, str], tmp: str) -> dict[str, Any]:
    """The fan-out through the real client (real handler, fake render), then a no-op re-run of it; wall and
    CPU times, the emulator's max in flight, and S3 requests by caller and kind for each."""
    argv = client_argv(bench.job_url, emulator, "s3://bench/out/fanout", bench.concurrency)
    bench.s3.clear()
    elapsed, cpu, line = bench.timed([*profiled(bench.profile), *argv, "--no-merge"], env, tmp)
    out: dict[str, Any] = {"elapsed": elapsed, "ratio": elapsed / bench.ideal, "client_cpu": cpu, "line": line}
    out["client_sys"] = bench.last_sys
    out.update(max_in_flight=emulator.max_in_flight, client=bench.s3.by_kind(CLIENT_APP))
    out.update(handlers=bench.s3.by_kind(HANDLER_APP), client_text=bench.per_chunk(CLIENT_APP))
    out["handlers_text"] = bench.per_chunk(HANDLER_APP)
    bench.s3.clear()
    bench.s3.max_in_flight = 0
    noop_profile = bench.profile and f"{bench.profile}.noop"
    elapsed, cpu, line = bench.timed([*profiled(noop_profile), *argv, "--no-merge"], env, tmp)
    out.update(noop=elapsed, noop_cpu=cpu, noop_line=line, noop_requests=bench.s3.by_kind())
    out["noop_concurrent"] = bench.s3.max_in_flight
    return out


def measure_cli(
    chunks: int,
    concurrency: int,
    latency: float,
    workers: int,
    threads: bool = True,
    profile: str | None = None,
    floor: bool = True,
) -> dict[str, Any]:
    """`helios job run --backend lambda` (the real client, a subprocess) with an S3 store on moto, the emulator
    running the real handler with a fake render, then a no-op re-run with S3 requests counted; then the same
    client against a no-op handler (the client's own share), and a trivial client against the real handler
    (the stand-ins' floor). Prints and returns them."""
    bench = FanOut(chunks, concurrency, latency, workers, threads)
    bench.profile = profile
    from fakes.lambda_emulator import LambdaEmulator

    with (
        tempfile.TemporaryDirectory(prefix="helios-fanout-") as tmp,
        LambdaEmulator(latency=latency, workers=workers, threads=threads) as emulator,
    ):
        env = {**os.environ, "HELIOS_HOME": str(Path(tmp) / "home"), "AWS_SDK_UA_APP_ID": CLIENT_APP}
        out = fan_out(bench, emulator, env, tmp)
        print(
            f"fan-out through `helios job run --backend lambda` (S3 store on moto, real handler, fake render): "
            f"{chunks} chunks, concurrency {concurrency}, latency {latency:g} s: {out['elapsed']:.2f} s (ideal "
            f"{bench.ideal:.2f} s, ratio {out['ratio']:.2f}), client CPU {out['client_cpu']:.2f} s (sys "
            f"{out['client_sys']:.2f} s), max in flight "
            f"{out['max_in_flight']}; {out['line']}\n  S3 requests of the client: {out['client_text']}\n"
            f"  S3 requests of the handlers: {out['handlers_text']}\n  load average after: "
            + " ".join(f"{load:.1f}" for load in os.getloadavg())
        )
        print(
            f"no-op re-run of the finished {chunks}-chunk job: {out['noop']:.2f} s (client CPU {out['noop_cpu']:.2f} "
            f"s), {sum(out['noop_requests'].values())} S3 requests, at most {out['noop_concurrent']} at once: "
            f"{out['noop_requests']}; {out['noop_line']}"
        )
        if not floor:
            bench.close()
            return out
        floor_argv = [sys.executable, __file__, "--client", "trivial", "--job", bench.job_url, "--store"]
        floor_argv += ["s3://bench/out/floor", "--concurrency", str(concurrency), *target_args(emulator)]
        emulator.max_in_flight = 0
        bench.s3.clear()
        elapsed, cpu, line = bench.timed(floor_argv, env, tmp)
        out.update(floor=elapsed, floor_cpu=cpu)
        print(
            f"floor (a trivial client: {concurrency} threads of boto3 invoke, same emulator, handler, fake render, "
            f"fresh store): {elapsed:.2f} s (ratio {elapsed / bench.ideal:.2f}), client CPU {cpu:.2f} s, max in "
            f"flight {emulator.max_in_flight}; {line}\n  S3 requests of the handlers: {bench.per_chunk(HANDLER_APP)}"
        )
    with (
        tempfile.TemporaryDirectory(prefix="helios-fanout-") as tmp,
        LambdaEmulator(handler="fakes.lambda_emulator:noop_handler", latency=latency, threads=True) as emulator,
    ):
        env = {**os.environ, "HELIOS_HOME": str(Path(tmp) / "home"), "AWS_SDK_UA_APP_ID": CLIENT_APP}
        bench.s3.clear()
        argv = client_argv(bench.job_url, emulator, "s3://bench/out/client-only", concurrency)
        elapsed, cpu, line = bench.timed([*argv, "--no-merge"], env, tmp)
        out.update(client_only=elapsed, client_only_cpu=cpu)
        print(
            f"the client alone (same `helios job run`, a no-op handler: no store work, no render): {elapsed:.2f} s "
            f"(ratio {elapsed / bench.ideal:.2f}), client CPU {cpu:.2f} s, max in flight {emulator.max_in_flight}"
            f"\n  S3 requests of the client: {bench.per_chunk(CLIENT_APP)}"
        )
    bench.close()
    return out


def trivial_client(args: argparse.Namespace) -> None:
    """The floor: invoke the function once per chunk from `--concurrency` threads (no DAG, leases, retries,
    progress); exits non-zero when a chunk fails."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    from helios_kit.loaders import load_spec

    spec, _ = load_spec(args.job)
    config = Config(max_pool_connections=args.concurrency + 10, retries={"total_max_attempts": 1})
    client = boto3.client("lambda", endpoint_url=args.endpoint_url, region_name=args.region, config=config)

    def one(chunk_id: int) -> bool:
        payload = json.dumps({"jobUrl": args.job, "chunkId": chunk_id, "store": args.store})
        answer = json.loads(client.invoke(FunctionName=args.function, Payload=payload)["Payload"].read())
        return answer.get("status") in ("ok", "skipped")

    with ThreadPoolExecutor(args.concurrency) as pool:
        ok = sum(pool.map(one, [chunk.id for chunk in spec.chunks]))
    print(f"{ok} of {len(spec.chunks)} chunks ok")
    if ok != len(spec.chunks):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2, help="Handler processes (hosts) in the emulator.")
    parser.add_argument(
        "--pool",
        choices=["threads", "processes"],
        default="threads",
        help="threads: every invocation in flight at once (handler hosts); processes: `--workers` at a time.",
    )
    parser.add_argument(
        "--client",
        choices=["cli", "stand-in", "trivial"],
        default="cli",
        help="cli: the real `helios job run` with an S3 store (moto); stand-in: the executor alone; "
        "trivial: (internal) the floor's client.",
    )
    parser.add_argument(
        "--profile", metavar="PATH", help="Sample the fan-out's client with py-spy into PATH (collapsed stacks)."
    )
    parser.add_argument("--no-floor", action="store_true", help="Skip the floor and client-only runs.")
    for name in ("--job", "--store", "--function", "--endpoint-url", "--region"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client == "trivial":
        trivial_client(args)
        return
    if args.client == "cli":
        threads = args.pool == "threads"
        measure_cli(args.chunks, args.concurrency, args.latency, args.workers, threads, args.profile, not args.no_floor)
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
