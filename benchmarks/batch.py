"""Batch benchmark: 12 one-second 320x240 videos from one template, `helios batch` against a loop of
`helios render --props` per row, in the same run; then 2,000 rows planned and scheduled without rendering.

    python benchmarks/batch.py [--videos 12] [--rows 2000] [-j N]

Part 1 prints both wall times and their ratio (loop / batch). Part 2 plans 2,000 rows (one JobSpec each),
builds the one DAG over every video's chunk and merge, and has doit schedule and run it with actions that
render nothing: the total is what a batch costs before its first frame (goal: < 3 s). Writing the job files
(a run writes each lazily, before the video's first chunk renders) is timed and printed apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "batch" / "card"
COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030"]


def helios(*args: str, cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "helios_kit.cli", *args], cwd=cwd, check=True, capture_output=True)
    return time.monotonic() - started


def rows_for(count: int) -> list[dict[str, str]]:
    return [
        {"id": f"v{index:04d}", "name": f"Player {index}", "score": str(index * 7 % 100), "color": COLORS[index % 6]}
        for index in range(count)
    ]


def render_speed(folder: Path, videos: int, concurrency: int | None) -> None:
    shutil.copytree(EXAMPLE, folder / "card")
    rows = rows_for(videos)
    (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    flags = ["--width", "320", "--height", "240", "--duration", "1"]
    jobs = ["-j", str(concurrency)] if concurrency else []
    batch_s = helios("batch", "card", "rows.jsonl", "-o", "batch/{id}.mp4", "-q", *flags, *jobs, cwd=folder)
    (folder / "loop").mkdir()
    loop_s = 0.0
    for row in rows:
        out = f"loop/{row['id']}.mp4"
        loop_s += helios("render", "card", "-o", out, "-q", "--props", json.dumps(row), *flags, cwd=folder)
    print(f"{videos} videos of 1 s at 320x240: helios batch {batch_s:.1f} s, loop of helios render {loop_s:.1f} s")
    print(f"ratio (loop / batch): {loop_s / batch_s:.2f}x")


def plan_and_schedule(folder: Path, count: int) -> None:
    from helios_kit.backends.base import Backend
    from helios_kit.batching.plan import BatchSettings, plan_batch, write_job_files
    from helios_kit.batching.rows import Row
    from helios_kit.batching.run import BatchRun
    from helios_kit.dag import TaskActions, run_tasks
    from helios_kit.run import RunOptions

    class NoBackend(Backend):
        name = "none"

        def run_chunk(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise AssertionError("nothing renders here")

    shutil.copytree(EXAMPLE, folder / "card", dirs_exist_ok=True)
    rows = [Row(index=index, line=index + 2, props=props) for index, props in enumerate(rows_for(count))]
    started = time.monotonic()
    plan = plan_batch(str(folder / "card"), rows, str(folder / "plan" / "{id}.mp4"), BatchSettings(duration=1))
    planned = time.monotonic()
    writes = time.monotonic()
    write_job_files(plan)  # a run does this lazily, before a video's first chunk renders
    writes = time.monotonic() - writes
    planned += writes  # not counted in the planning and scheduling total
    batch = BatchRun(plan, NoBackend(), RunOptions(concurrency=2))
    noop = TaskActions(
        chunk_uptodate=lambda chunk: False,
        render_chunk=lambda chunk: True,
        merge_uptodate=lambda: False,
        merge=lambda: True,
        clean=lambda rels: None,
    )
    for _, run in batch.runs:  # the real DAG, with actions that render nothing
        run.actions = lambda noop=noop: noop  # type: ignore[method-assign]
    tasks = sum(len(run.ctx.spec.chunks) + 1 for _, run in batch.runs)
    error = run_tasks(batch.tasks, db_file=folder / "plan.doit.db", concurrency=1, task_count=tasks)
    done = time.monotonic()
    assert error is None, error
    print(
        f"{count} rows: planned in {planned - started - writes:.2f} s, DAG of {tasks} tasks prepared and scheduled "
        f"by doit in {done - planned:.2f} s; total {done - started - writes:.2f} s (goal < 3 s); writing the "
        f"{count} job files (done lazily as videos start rendering) took {writes:.2f} s more"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("-j", "--concurrency", type=int, default=None)
    parser.add_argument("--skip-render", action="store_true", help="Only the planning part.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="helios-bench-batch-") as tmp:
        if not args.skip_render:
            render_speed(Path(tmp) / "render", args.videos, args.concurrency)
        plan_and_schedule(Path(tmp) / "plan", args.rows)


if __name__ == "__main__":
    main()
