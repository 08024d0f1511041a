"""The built-in plugin: registers helios-kit's own backends, spec loaders and repositories.

It goes through the same hooks as any third party. Targets are lazy `"module:attribute"` references so that
nothing heavy is imported until a name is actually used.
"""

from __future__ import annotations

from helios_kit.hookspecs import Register, hookimpl


@hookimpl
def register_backends(register: Register) -> None:
    register("local", "helios_kit.backends.local:LocalBackend")


@hookimpl
def register_spec_loaders(register: Register) -> None:
    register("file", "helios_kit.loaders:load_file")
    register("http", "helios_kit.loaders:load_http")
    register("https", "helios_kit.loaders:load_http")
    for scheme in ("s3", "gs", "gcs", "memory"):
        register(scheme, "helios_kit.loaders:load_fsspec")


@hookimpl
def register_repositories(register: Register) -> None:
    register("sqlite", "helios_kit.repository:SQLiteJobRepository")
    register("memory", "helios_kit.repository:InMemoryJobRepository")
