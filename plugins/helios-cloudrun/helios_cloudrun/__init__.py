"""helios-cloudrun: registers the `cloudrun` backend (chunks POSTed to a Cloud Run service running
`helios worker serve`)."""

from __future__ import annotations

from helios_kit.hookspecs import Register, hookimpl


@hookimpl
def register_backends(register: Register) -> None:
    register("cloudrun", "helios_cloudrun.backend:CloudRunBackend")
