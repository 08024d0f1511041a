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
