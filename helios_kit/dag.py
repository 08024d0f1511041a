"""JobSpec → doit tasks, and running them with DoitMain; nothing else.

One task per chunk (`<basename>:chunk-<id>`) and a `<basename>:merge` task that depends on all of them.
What each task does, and whether it is up to date, are callables the caller hands in as
:class:`TaskActions` (the run module, :mod:`helios_kit.run`, provides them), so this module imports neither
the executor nor the run. Up to date means what the artifact store says, never doit's own database: the
tasks have no `file_dep`/`targets`, only `uptodate`, so deleting doit's database re-renders nothing.

:func:`run_tasks` hands the tasks to ``DoitMain`` through a custom task loader and runs them with doit's
thread runner (`helios job run`); a project's ``dodo.py`` yields the same tasks to doit directly
(``doit -n 2 render`` forks, which these tasks support: doit finds them by name in the child).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helios_kit.spec import Chunk, JobSpec

TaskDicts = Callable[[], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class TaskActions:
    """What the tasks do: doit calls these (each returns True when done / up to date)."""

    chunk_uptodate: Callable[[Chunk], bool]
    render_chunk: Callable[[Chunk], bool]
    merge_uptodate: Callable[[], bool]
    merge: Callable[[], bool]
    clean: Callable[[list[str]], None]


def job_tasks(
    spec: JobSpec,
    actions: TaskActions,
    *,
    basename: str = "render",
    chunk_ids: Iterable[int] | None = None,
    merge: bool = True,
) -> Iterator[dict[str, Any]]:
    """doit task dicts: `<basename>:chunk-<id>` per (selected) chunk and `<basename>:merge` depending on them."""
    selected = set(chunk_ids) if chunk_ids is not None else None
    names = []
    for chunk in spec.chunks:
        if selected is not None and chunk.id not in selected:
            continue
        names.append(f"{basename}:chunk-{chunk.id}")
        yield _chunk_task(chunk, actions, basename)
    if merge:
        yield {
            "basename": basename,
            "name": "merge",
            "doc": f"{len(spec.chunks)} chunks → {spec.merge.output_file}",
            "actions": [(actions.merge, [])],
            "uptodate": [(actions.merge_uptodate, [])],
            "task_dep": names,
            "clean": [(actions.clean, [[spec.merge.output_file]])],
            "verbosity": 2,  # never let doit swap sys.stdout under running threads
        }


def _chunk_task(chunk: Chunk, actions: TaskActions, basename: str) -> dict[str, Any]:
    return {
        "basename": basename,
        "name": f"chunk-{chunk.id}",
        "doc": f"frames [{chunk.start_frame}, {chunk.end_frame}) → {chunk.output_file}",
        "actions": [(actions.render_chunk, [chunk])],
        "uptodate": [(actions.chunk_uptodate, [chunk])],
        "clean": [(actions.clean, [[chunk.output_file]])],
        "verbosity": 2,  # never let doit swap sys.stdout under running threads
    }


# ---------------------------------------------------------------------------------------------------
# Running the tasks with doit


def _doit_main(namespace: dict[str, Any], args: list[str]) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    return DoitMain(ModuleTaskLoader(namespace), config_filenames=()).run(args)


class _Reporter:
    """A silent doit reporter that keeps doit's own errors (the executor reports the chunks)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

    def add_failure(self, task: Any, fail: Any) -> None:
        from doit.exceptions import UnmetDependency

        if isinstance(fail, UnmetDependency):  # the merge (or the group) after a failed chunk: already reported
            return
        ours = task.name.endswith(":merge") or ":chunk-" in task.name
        if not ours or "Traceback" in fail.get_msg():  # doit's own trouble, or an exception inside our action
            self.errors.append(f"{task.name}: {fail.get_msg().strip().splitlines()[-1]}")

    def runtime_error(self, msg: str) -> None:
        self.errors.append(msg.strip().splitlines()[-1] if msg.strip() else "doit runtime error")

    def cleanup_error(self, exception: BaseException) -> None:
        self.errors.append(str(exception))


def run_tasks(task_render: TaskDicts, *, db_file: Path, concurrency: int, task_count: int) -> str | None:
    """Run `task_render`'s tasks with DoitMain (thread runner, `concurrency` at once, `--continue` so one
    failed chunk does not stop the others). Returns doit's own error line, if any."""
    reporter = _Reporter()
    namespace = {
        "task_render": task_render,
        "DOIT_CONFIG": {"reporter": reporter, "verbosity": 0},
    }
    args = ["run", "--continue", "--db-file", str(db_file), "--backend", "json"]
    if concurrency > 1:
        args += ["-n", str(concurrency), "-P", "thread"]
    args.append("render")
    # doit's dispatcher recurses about once per task when many finish together; give it room for big jobs
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * task_count + 2000))
    try:
        code = _doit_main(namespace, args)
    finally:
        sys.setrecursionlimit(limit)
    if reporter.errors:
        return reporter.errors[0]
    if code == 3:
        return "doit could not start the job's tasks"
    return None
