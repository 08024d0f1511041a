"""helios-dask: registers the `dask` backend (each chunk one task on a Dask cluster: a scheduler and workers
you run, or a LocalCluster on this machine). The backend module imports distributed only when it is used."""

from __future__ import annotations

from helios_kit.hookspecs import Register, hookimpl


@hookimpl
def register_backends(register: Register) -> None:
    register("dask", "helios_dask.backend:DaskBackend")
