"""An example batch: `doit render` renders card/ once per row of rows.csv into out/<id>.mp4, incrementally.

Each row is the props of one video. The plan (one JobSpec per row under out/.helios/batch/jobs/) is
rewritten only where a row changed; up to date is what the artifact store says, so a second `doit render`
renders nothing, an edited row renders only its own video, and `doit -n 2 render` renders two chunks at once.
The same batch from the shell: `helios batch card rows.csv -o 'out/{id}.mp4'`.
"""

from pathlib import Path

from helios_kit.batching.run import batch_tasks

HERE = Path(__file__).resolve().parent

DOIT_CONFIG = {"default_tasks": ["render"], "verbosity": 2}

#: Render settings over the template's meta tag (320x240, 30 fps, 1 s): width, height, fps, duration, ...
SETTINGS: dict = {}


def task_render():
    """One task per video chunk and one merge per video, all in one DAG."""
    yield from batch_tasks(HERE / "card", HERE / "rows.csv", str(HERE / "out" / "{id}.mp4"), **SETTINGS)
