"""helios-kit: render browser-based video compositions to video files, frame-exact, on one machine or many.

The public Python API (:mod:`helios_kit.api`) is importable from here and loads on first use, so
``import helios_kit`` stays cheap::

    import helios_kit
    helios_kit.render("intro/", "intro.mp4", duration=2)
    spec = helios_kit.plan("intro/", job_file="job.json")
    report = helios_kit.run_job("job.json", backend="local")
    report = helios_kit.batch("card/", "rows.csv", output="out/{id}.mp4")

``helios_kit.render`` is also the renderer's package (:mod:`helios_kit.render`): the name is a callable whose
attributes are that package's (``helios_kit.render.session``), so both uses keep working whichever loads first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from helios_kit.api import batch, emit_batch, plan, plan_rows, render, run_job

__all__ = ["__version__", "batch", "emit_batch", "plan", "plan_rows", "render", "run_job"]
_API = frozenset(__all__) - {"__version__", "render"}


class _RenderEntry:
    """`helios_kit.render(...)` renders (:func:`helios_kit.api.render`); its attributes are the package's."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from helios_kit.api import render as render_

        return render_(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module("helios_kit.render"), name)


class _Package(types.ModuleType):
    """Keeps `helios_kit.render` the API's entry when the import system binds the subpackage of that name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "render" and isinstance(value, types.ModuleType):
            return  # still in sys.modules; reachable through the entry's attributes
        super().__setattr__(name, value)


if not TYPE_CHECKING:
    render = _RenderEntry()


def __getattr__(name: str) -> Any:
    if name in _API:
        from helios_kit import api

        return getattr(api, name)
    raise AttributeError(f"module 'helios_kit' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
