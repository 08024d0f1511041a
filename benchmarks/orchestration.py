"""Orchestration benchmark: the cost of planning, scheduling and skipping chunks, the merge of many chunks,
and the speed-up of rendering chunks in parallel. Prints figures and ratios measured in one run.

    python benchmarks/orchestration.py            # everything (real rendering needs Chromium + ffmpeg)
    python benchmarks/orchestration.py --quick    # no real rendering

1. plan + schedule 10,000 chunks through the doit DAG with a backend that writes tiny files (threads);
2. per-chunk scheduling overhead (a backend that does nothing; goal < 2 ms);
3. no-op re-run of a completed 1,000-chunk job: `helios job run` in a new interpreter (goal < 2 s wall);
4. merge 1,000 real one-second chunks (stream copy; goal < 15 s);
5. real rendering: a 4-chunk job at concurrency 2 vs 1 (goal >= 1.6x on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helios_kit.backends.base import Backend, ChunkContext, WorkerResult  # noqa: E402
from helios_kit.backends.local import LocalBackend  # noqa: E402
from helios_kit.context import JobContext  # noqa: E402
from helios_kit.planner import plan_job  # noqa: E402
from helios_kit.run import RunOptions, execute_job  # noqa: E402
from helios_kit.spec import Chunk, JobSpec, RenderConfig, dump  # noqa: E402

FRAME_INDEX_HTML = (
    (ROOT / "tests" / "fakes" / "jobs.py").read_text().split('FRAME_INDEX_HTML = """', 1)[1].split('"""', 1)[0]
)


class TinyBackend(Backend):
    """Writes a few bytes per chunk and commits them with the right digest (no browser, no ffmpeg)."""

    name = "tiny"

    def __init__(self, ctx: JobContext, work: Path) -> None:
        super().__init__()
        self.ctx = ctx
        self.work = work

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        local = self.work / f"{chunk.id}.bin"
        local.write_bytes(f"chunk {chunk.id}\n".encode())
        self.ctx.store.commit(
            local,
            chunk.output_file,
            digest=self.ctx.digest(chunk),
            job_id=spec.job_id,
            frame_count=chunk.frame_count,
            chunk_id=chunk.id,
        )
        return WorkerResult(chunk_id=chunk.id, status="ok", frames=chunk.frame_count)


class NoopBackend(Backend):
    name = "noop"

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        return WorkerResult(chunk_id=chunk.id, status="ok", frames=chunk.frame_count)


def make_job(folder: Path, chunks: int, frames_per_chunk: int = 1, width: int = 160, height: int = 120) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(FRAME_INDEX_HTML)
    config = RenderConfig(input="index.html", width=width, height=height, fps=30, frame_count=chunks * frames_per_chunk)
    spec = plan_job(config, concurrency=chunks, job_id=f"bench-{chunks}")
    dump(spec, folder / "job.json")
    return folder / "job.json"


def load(job: Path) -> JobSpec:
    from helios_kit.spec import load as load_spec

    return load_spec(job)


def bench_schedule(tmp: Path) -> None:
    started = time.perf_counter()
    job = make_job(tmp / "plan10k", 10_000)
    spec = load(job)
    planned = time.perf_counter() - started
    ctx = JobContext.prepare(spec, str(job), job.parent)
    work = tmp / "tiny-work"
    work.mkdir()
    started = time.perf_counter()
    report = execute_job(
        spec, str(job), job.parent, TinyBackend(ctx, work), RunOptions(concurrency=8, merge=False), context=ctx
    )
    ran = time.perf_counter() - started
    assert report.rendered == 10_000, report.summary_line()
    print(f"plan 10,000 chunks (plan + write + load job.json): {planned:.2f} s")
    print(
        f"schedule + run 10,000 tiny chunks (8 threads, commits with manifests): {ran:.2f} s "
        f"= {ran / 10_000 * 1000:.2f} ms/chunk"
    )
    started = time.perf_counter()
    again = execute_job(
        spec, str(job), job.parent, TinyBackend(ctx, work), RunOptions(concurrency=8, merge=False), context=ctx
    )
    print(
        f"re-run of those 10,000 complete chunks (all skipped): {time.perf_counter() - started:.2f} s "
        f"({again.skipped} skipped)"
    )


def bench_overhead(tmp: Path) -> None:
    job = make_job(tmp / "noop", 5_000)
    spec = load(job)
    ctx = JobContext.prepare(spec, str(job), job.parent)
    for concurrency in (1, 8):
        started = time.perf_counter()
        report = execute_job(
            spec, str(job), job.parent, NoopBackend(), RunOptions(concurrency=concurrency, merge=False), context=ctx
        )
        elapsed = time.perf_counter() - started
        assert report.rendered == 5_000
        per = elapsed / 5_000 * 1000
        print(
            f"per-chunk scheduling overhead, concurrency {concurrency} (no-op backend, 5,000 chunks): {per:.3f} ms "
            f"(goal < 2 ms: {'met' if per < 2 else 'MISSED'})"
        )


def complete_job(tmp: Path, chunks: int, chunk_file: Path | None = None) -> tuple[Path, JobContext]:
    """A job whose chunks are all committed (tiny files, or copies of a real chunk)."""
    job = make_job(tmp, chunks, frames_per_chunk=30 if chunk_file else 1)
    spec = load(job)
    ctx = JobContext.prepare(spec, str(job), job.parent)
    for chunk in spec.chunks:
        source = chunk_file
        if source is None:
            source = tmp.parent / "tiny.bin"  # outside the composition's folder (its digest)
            source.write_bytes(b"x")
        ctx.store.commit(
            source,
            chunk.output_file,
            digest=ctx.digest(chunk),
            job_id=spec.job_id,
            frame_count=chunk.frame_count,
            chunk_id=chunk.id,
            media_seen=0,  # what a real render of this page records: no media, so no soundtrack to look for
        )
    return job, ctx


def bench_noop_rerun(tmp: Path) -> None:
    """The no-op re-run of benchmarks/noop_rerun.py (chunks that record real dependencies), 1,000 chunks."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from noop_rerun import best_rerun, finished_job

    timings = best_rerun(finished_job(tmp / "rerun1k", 1_000, footage_mb=0), 1_000, tmp / "home")
    best = min(timings)
    print(
        f"no-op re-run of a completed 1,000-chunk job (`helios job run`, new interpreter): best {best:.2f} s, "
        f"runs {', '.join(f'{t:.2f}' for t in timings)} s (goal < 2 s: {'met' if best < 2 else 'MISSED'})"
    )


def bench_merge(tmp: Path) -> None:
    from fakes.renders import frame_index_render

    one = tmp / "one-second.mp4"
    config = RenderConfig(input="index.html", width=160, height=120, fps=30, frame_count=30)
    frame_index_render(config, input_location="", start_frame=0, frame_count=30, output_path=one)
    _, ctx = complete_job(tmp / "merge1k", 1_000, chunk_file=one)
    from helios_kit.run import merge_job

    started = time.perf_counter()
    outcome = merge_job(ctx)
    elapsed = time.perf_counter() - started
    print(
        f"merge 1,000 one-second chunks (check, stream-copy concat, verify, commit): {elapsed:.2f} s, "
        f"{outcome.frames} frames (goal < 15 s: {'met' if elapsed < 15 else 'MISSED'})"
    )


def bench_parallel(tmp: Path) -> None:
    timings = {}
    for concurrency in (1, 2):
        job = make_job(tmp / f"real-{concurrency}", 4, frames_per_chunk=150, width=320, height=240)
        started = time.perf_counter()
        report = execute_job(load(job), str(job), job.parent, LocalBackend(), RunOptions(concurrency=concurrency))
        timings[concurrency] = time.perf_counter() - started
        assert report.ok and report.rendered == 4, report.summary_line()
    ratio = timings[1] / timings[2]
    print(
        f"real rendering, 4 chunks x 150 frames at 320x240: concurrency 1 {timings[1]:.2f} s, "
        f"concurrency 2 {timings[2]:.2f} s → {ratio:.2f}x (goal >= 1.6x: {'met' if ratio >= 1.6 else 'MISSED'}; "
        f"{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Skip real rendering.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    tmp = Path(tempfile.mkdtemp(prefix="helios-bench-"))
    try:
        bench_schedule(tmp)
        bench_overhead(tmp)
        bench_noop_rerun(tmp)
        bench_merge(tmp)
        if not args.quick:
            bench_parallel(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
