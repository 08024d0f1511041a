"""An example helios-kit project: `doit render` renders composition/ to out.mp4, incrementally.

The convention: a project's dodo.py plans its job with `plan_project(...)` (render settings in code; the
plan is written to job.json only when it changes) and yields `project_tasks(job)`: one doit task per chunk
plus a merge that depends on them all. Up to date is what the artifact store says (each chunk's
done-manifest and digest), so `doit forget` or deleting .doit.db never re-renders anything.
"""

from pathlib import Path

from helios_kit.run import plan_project, project_tasks

HERE = Path(__file__).resolve().parent

#: `subtasks`: plain `doit list` shows the chunk tasks and the merge, not only the `render` group.
DOIT_CONFIG = {"default_tasks": ["render"], "verbosity": 2, "subtasks": True}

#: Render settings (any RenderConfig field). Change one and only the affected chunks re-render.
SETTINGS = {
    "input": "composition/index.html",
    "width": 320,
    "height": 180,
    "fps": 30,
    "frame_count": 90,
    "output": "out.mp4",
}
CHUNKS = 3


def task_render():
    """Render composition/index.html to out.mp4 (one task per chunk, then the merge)."""
    job = plan_project(HERE, chunks=CHUNKS, **SETTINGS)
    yield from project_tasks(job)
