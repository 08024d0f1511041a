"""The plugin contract: pluggy hook specifications of the `helios` project.

Every hook takes a `register` callback, so one plugin can add several things. Built-ins register through
the same hooks as third parties (see :mod:`helios_kit.builtin_plugins`). A third party ships a module with
`@hookimpl` functions and names it in its distribution's entry points::

    [project.entry-points.helios]
    mycluster = "helios_mycluster"

    # helios_mycluster/__init__.py
    from helios_kit.hookspecs import hookimpl

    @hookimpl
    def register_backends(register):
        register("mycluster", MyClusterBackend)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "helios"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: `register(name, thing)`: the callback every hook receives.
Register = Callable[[str, Any], None]


@hookspec
def register_backends(register: Register) -> None:
    """Register execution backends: `register("lambda", LambdaBackend)`.

    A backend is a subclass of :class:`helios_kit.backends.base.Backend`: it runs one chunk (and optionally
    the merge) and returns a :class:`helios_kit.protocol.WorkerResult` with a status.
    """


@hookspec
def register_spec_loaders(register: Register) -> None:
    """Register JobSpec loaders by URL scheme: `register("s3", load_bytes)`.

    A loader is `load(source: str, options: LoaderOptions) -> bytes` returning the spec's raw JSON and
    raising :class:`helios_kit.errors.LoaderError` with one clear line when it cannot.
    """


@hookspec
def register_repositories(register: Register) -> None:
    """Register job repositories by name: `register("sqlite", SQLiteJobRepository)`.

    A repository is a :class:`helios_kit.repository.JobRepository` built from a location string.
    """
