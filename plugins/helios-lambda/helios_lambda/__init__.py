"""helios-lambda: registers the `lambda` backend (chunks invoked on an AWS Lambda function whose handler is
`helios_lambda.handler.handler`)."""

from __future__ import annotations

from helios_kit.hookspecs import Register, hookimpl


@hookimpl
def register_backends(register: Register) -> None:
    register("lambda", "helios_lambda.backend:LambdaBackend")
