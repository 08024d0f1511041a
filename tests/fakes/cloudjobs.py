"""Small jobs for the cloud tests: a frame-index JobSpec and its upload to (moto) S3."""

from __future__ import annotations

import fsspec

from helios_kit.planner import plan_job
from helios_kit.spec import JobSpec, RenderConfig, dumps

HTML = "<!doctype html><body style='margin:0;background:#000'>frame index</body>"


def make_spec(frames: int = 24, chunks: int = 4, job_id: str = "cloud-job") -> JobSpec:
    config = RenderConfig(input="index.html", width=160, height=120, fps=24, frame_count=frames)
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
