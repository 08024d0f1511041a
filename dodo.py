"""The project's own doit tasks: `doit test`, `doit lint`, `doit bench`, `doit render` (the examples).

Run `./dev setup` first (or use the virtualenv's doit: `.venv/bin/doit list`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parent
PYTHON = sys.executable

DOIT_CONFIG = {"default_tasks": ["lint", "test"], "verbosity": 2}


def task_lint():
    """ruff: lint and format check."""
    return {
        "actions": [f"{PYTHON} -m ruff check .", f"{PYTHON} -m ruff format --check ."],
        "uptodate": [False],
    }


def task_test():
    """The whole test suite (the README's test command runs this too, through ./dev test)."""
    return {"actions": [f"{PYTHON} -m pytest"], "uptodate": [False]}


def task_bench():
    """Benchmarks: each script prints ratios measured in one run."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        yield {
            "name": script.stem,
            "actions": [f"{PYTHON} {script}"],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_render():
    """Render the examples incrementally into build/examples/ (and examples/project with its own dodo.py).

    Each composition is planned once into build/examples/<name>/job.json and run with `helios job run`, which
    renders only the chunks that are not complete; re-running renders nothing.
    """
    from doit.action import CmdAction

    build = ROOT / "build" / "examples"
    for index in sorted((ROOT / "examples").glob("*/index.html")):
        name = index.parent.name
        job = build / name / "job.json"
        yield {
            "name": f"plan-{name}",
            "actions": [
                f"mkdir -p {job.parent}",
                f"{PYTHON} -m helios_kit.cli render {index.parent} --emit-job {job} "
                f"-o {job.parent / (name + '.mp4')} --concurrency 4",
            ],
            "targets": [str(job)],
            "uptodate": [True],
        }
        yield {
            "name": name,
            "actions": [f"{PYTHON} -m helios_kit.cli job run {job}"],
            "task_dep": [f"render:plan-{name}"],
            "uptodate": [False],
            "verbosity": 2,
        }
    project = ROOT / "examples" / "project"
    if (project / "dodo.py").exists():
        yield {
            "name": "project",
            "actions": [CmdAction(f"{PYTHON} -m doit render", cwd=str(project))],
            "uptodate": [False],
            "verbosity": 2,
        }
