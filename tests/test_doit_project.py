"""`doit render` in examples/project (a copy), through subprocesses: list, parallel render, no-op re-run,
forget, partial re-render, clean, and no processes left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fakes.jobs import wait_no_tagged_processes

from helios_kit.probe import count_packets

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "project"


def doit(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.render
def test_doit_render_in_the_example_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(
        PROJECT, project, ignore=shutil.ignore_patterns("chunks", "out.mp4*", ".doit.db*", ".helios", "__pycache__")
    )
    tag = f"helios-doit-{uuid.uuid4().hex}"
    env = dict(os.environ, HELIOS_TEST_PROCESS_TAG=tag, HELIOS_HOME=str(tmp_path / "home"))
    env.pop("HELIOS_WORKER_RENDER", None)

    listed = doit(project, "list", env=env).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    assert names == ["render", "render:chunk-0", "render:chunk-1", "render:chunk-2", "render:merge"]

    first = doit(project, "-n", "2", "render", env=env).stdout
    assert first.count("rendered in") == 3 and "merged →" in first
    out = project / "out.mp4"
    assert count_packets(out) == 90
    assert wait_no_tagged_processes(tag) == []

    (project / "composition" / "notes.txt").write_text("a file the page never loads")
    again = doit(project, "render", env=env).stdout
    assert sorted(line for line in again.splitlines() if line.startswith("--")) == [
        "-- render:chunk-0",
        "-- render:chunk-1",
        "-- render:chunk-2",
        "-- render:merge",
    ]

    doit(project, "forget", env=env)
    for db in project.glob(".doit.db*"):
        db.unlink()
    cached = doit(project, "render", env=env).stdout
    assert "rendered in" not in cached and "merged" not in cached

    (project / "chunks" / "chunk-0001.mp4").unlink()
    partial = doit(project, "render", env=env).stdout
    assert "chunk 1: rendered" in partial and "chunk 0:" not in partial and "chunk 2:" not in partial
    assert count_packets(out) == 90

    doit(project, "clean", "render", env=env)
    assert not out.exists() and not list((project / "chunks").glob("*.mp4*"))
    assert wait_no_tagged_processes(tag) == []
