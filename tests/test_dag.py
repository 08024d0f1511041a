"""The doit DAG: task shapes, the store as the only truth (doit's db is a cache), digests that re-render
exactly what changed, the merge's own up-to-date check, and a remote (fsspec) store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
from fakes.jobs import RuntimeBackend, make_job
from fakes.renders import decode_frame_indexes, frame_index_render

from helios_kit.context import JobContext
from helios_kit.executor import ChunkExecutor
from helios_kit.run import JobRun, RunOptions, execute_job
from helios_kit.spec import load


def run(job: Path, backend: RuntimeBackend, **options):
    return execute_job(load(job), str(job), job.parent, backend, RunOptions(**options))


def test_one_task_per_chunk_and_a_merge_depending_on_all(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    spec = load(job)
    ctx = JobContext.prepare(spec, str(job), job.parent)
    executor = ChunkExecutor(RuntimeBackend(frame_index_render, tmp_path / "ws"), spec, ctx.chunk_context())
    tasks = list(JobRun(ctx, executor).tasks())
    assert [f"{t['basename']}:{t['name']}" for t in tasks] == [
        "render:chunk-0",
        "render:chunk-1",
        "render:chunk-2",
        "render:merge",
    ]
    assert tasks[-1]["task_dep"] == ["render:chunk-0", "render:chunk-1", "render:chunk-2"]
    for task in tasks:  # up to date is the store's word, never file timestamps in doit's db
        assert "file_dep" not in task and "targets" not in task and task["uptodate"]


def test_deleting_doits_db_renders_nothing(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    backend = RuntimeBackend(frame_index_render, tmp_path / "ws")
    assert run(job, backend).rendered == 3
    out = tmp_path / "job" / "out.mp4"
    stamp = out.stat().st_mtime_ns
    for db in (tmp_path / "job" / ".helios").glob("*.doit.db*"):
        db.unlink()
    again = run(job, backend)
    assert (again.rendered, again.skipped) == (0, 3) and sorted(backend.calls) == [0, 1, 2]
    assert again.merge is not None and again.merge.skipped
    assert out.stat().st_mtime_ns == stamp


def test_exactly_the_changed_chunks_re_render_and_the_merge_follows(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=16, chunks=4)
    backend = RuntimeBackend(frame_index_render, tmp_path / "ws")
    run(job, backend)
    folder = tmp_path / "job"
    (folder / "chunks" / "chunk-0002.mp4").unlink()
    backend.calls.clear()
    report = run(job, backend)
    assert backend.calls == [2] and (report.rendered, report.skipped) == (1, 3)
    # the encoder is deterministic: the re-rendered chunk has the same bytes, so the merge stays up to date
    assert report.merge is not None and report.merge.skipped
    # a render setting changes every chunk's digest
    data = json.loads(job.read_text())
    data["config"]["crf"] = 30
    job.write_text(json.dumps(data))
    backend.calls.clear()
    changed = run(job, backend)
    assert changed.rendered == 4 and sorted(backend.calls) == [0, 1, 2, 3]
    assert not changed.merge.skipped  # its inputs' manifests changed: merged again
    # the composition's content too
    (folder / "index.html").write_text((folder / "index.html").read_text() + "<!-- edit -->")
    backend.calls.clear()
    assert run(job, backend).rendered == 4
    # --force re-renders everything even when complete
    backend.calls.clear()
    forced = run(job, backend, force=True)
    assert forced.rendered == 4 and not forced.merge.skipped
    assert decode_frame_indexes(folder / "out.mp4", 160, 120) == list(range(16))


def test_corrupt_manifest_means_not_done(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=8, chunks=2)
    backend = RuntimeBackend(frame_index_render, tmp_path / "ws")
    run(job, backend)
    (tmp_path / "job" / "chunks" / "chunk-0001.mp4.done.json").write_text("{not json")
    backend.calls.clear()
    assert run(job, backend).rendered == 1 and backend.calls == [1]


def test_remote_store_chunks_and_merge_live_in_the_store(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=12, chunks=3)
    store = f"memory://helios-{uuid.uuid4().hex}/run"
    backend = RuntimeBackend(frame_index_render, tmp_path / "ws")
    report = run(job, backend, store=store)
    assert report.ok and report.rendered == 3
    fs = fsspec.filesystem("memory")
    root = store.removeprefix("memory://")
    assert fs.exists(f"{root}/chunks/chunk-0000.mp4.done.json")
    assert report.merge.output == f"{store}/out.mp4"
    local = tmp_path / "fetched.mp4"
    fs.get_file(f"/{root}/out.mp4", str(local))
    assert decode_frame_indexes(local, 160, 120) == list(range(12))
    assert not (tmp_path / "job" / "out.mp4").exists()
    again = run(job, backend, store=store)
    assert (again.rendered, again.skipped) == (0, 3) and again.merge.skipped


def test_remote_job_and_composition_merge_keeps_the_soundtrack(tmp_path: Path) -> None:
    import subprocess

    from helios_kit.loaders import load_spec

    folder = tmp_path / "job"
    make_job(folder, frames=12, chunks=2, html="<body><audio src='tone.wav'></audio></body>")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(folder / "tone.wav")],
        check=True,
    )
    base = f"memory://helios-{uuid.uuid4().hex}/jobs"
    fs = fsspec.filesystem("memory")
    for name in ("job.json", "index.html", "tone.wav"):
        fs.pipe(f"{base.removeprefix('memory://')}/{name}", (folder / name).read_bytes())
    job_url = f"{base}/job.json"
    spec, job_dir = load_spec(job_url)
    backend = RuntimeBackend(frame_index_render, tmp_path / "ws")
    report = execute_job(spec, job_url, job_dir, backend, RunOptions())
    assert report.ok, report.summary_line()
    assert report.merge.output == f"{base}/out.mp4"
    local = tmp_path / "out.mp4"
    fs.get_file(f"/{base.removeprefix('memory://')}/out.mp4", str(local))
    streams = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(local)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(streams) == ["audio", "video"]
    assert decode_frame_indexes(local, 160, 120) == list(range(12))
    ctx = JobContext.prepare(spec, job_url, job_dir)  # the downloaded composition lives until close()
    assert ctx.workspace is not None and (ctx.workspace / "job" / "tone.wav").is_file()
    workspace = ctx.workspace
    ctx.close()
    assert not workspace.exists()


def test_tasks_call_the_actions_they_are_handed(tmp_path: Path) -> None:
    from helios_kit.dag import TaskActions, job_tasks

    spec = load(make_job(tmp_path / "job", frames=12, chunks=3))
    calls: list[tuple[str, object]] = []
    actions = TaskActions(
        chunk_uptodate=lambda chunk: calls.append(("uptodate", chunk.id)) or False,
        render_chunk=lambda chunk: calls.append(("render", chunk.id)) or True,
        merge_uptodate=lambda: False,
        merge=lambda: calls.append(("merge", None)) or True,
        clean=lambda rels: calls.append(("clean", tuple(rels))),
    )
    tasks = list(job_tasks(spec, actions, chunk_ids=[1], basename="make"))
    assert [f"{t['basename']}:{t['name']}" for t in tasks] == ["make:chunk-1", "make:merge"]
    assert tasks[-1]["task_dep"] == ["make:chunk-1"]
    for task in tasks:
        for action, args in [*task["uptodate"], *task["actions"], *task["clean"]]:
            action(*args)
    assert calls == [
        ("uptodate", 1),
        ("render", 1),
        ("clean", ("chunks/chunk-0001.mp4",)),
        ("merge", None),
        ("clean", ("out.mp4",)),
    ]
    assert list(job_tasks(spec, actions, merge=False))[-1]["name"] == "chunk-2"
