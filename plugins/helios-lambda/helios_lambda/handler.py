"""The Lambda function handler: `helios_lambda.handler.handler(event, context)`, a thin shell around WorkerRuntime.

The event is the worker payload `{"jobUrl", "chunkId", "store"?, "force"?}` (or an API Gateway / function
URL event whose `body` holds it). The return value is the WorkerResult as JSON (camelCase); a chunk's
failure is a returned result, not an exception, so the client can tell a bad spec (not retryable) from a
crash. Shortly before the function's time limit the render is cancelled, and the result says so
(retryable) instead of Lambda killing the process mid-commit.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from pydantic import ValidationError

from helios_kit.protocol import WorkerRequest, WorkerResult, WorkerStatus
from helios_kit.spec import format_validation_error
from helios_kit.worker.runtime import WorkerRuntime

#: Seconds kept in reserve before the Lambda deadline to stop the render and report.
DEADLINE_MARGIN_S = 10.0

_runtime: WorkerRuntime | None = None


def _get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:  # reused across warm invocations; each run has its own temp workspace
        _runtime = WorkerRuntime(os.environ.get("HELIOS_WORKSPACE", "/tmp"))
    return _runtime


def _parse(event: Any) -> WorkerRequest:
    if isinstance(event, dict) and "body" in event and "jobUrl" not in event:
        body = event["body"]
        if event.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body)
        event = json.loads(body)
    if isinstance(event, (str, bytes)):
        event = json.loads(event)
    return WorkerRequest.model_validate(event)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Run one chunk; returns the WorkerResult as a JSON-ready dict."""
    try:
        request = _parse(event)
    except ValidationError as error:
        return _dump(WorkerResult.failed(None, f"bad event: {format_validation_error(error)}", retryable=False))
    except (ValueError, TypeError) as error:
        return _dump(WorkerResult.failed(None, f"bad event: not a JSON object ({error})", retryable=False))

    cancel = threading.Event()
    timer: threading.Timer | None = None
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining_ms):
        budget = remaining_ms() / 1000 - DEADLINE_MARGIN_S
        if budget > 0:
            timer = threading.Timer(budget, cancel.set)
            timer.daemon = True
            timer.start()
    try:
        result = _get_runtime().run(request.job_url, request.chunk_id, request.store, request.force, cancel=cancel)
    finally:
        if timer is not None:
            timer.cancel()
    if cancel.is_set() and not result.ok:
        result = result.model_copy(
            update={
                "status": WorkerStatus.TIMED_OUT,
                "retryable": True,
                "stderr": f"chunk {request.chunk_id}: stopped {DEADLINE_MARGIN_S:g} s before the Lambda time limit "
                "(plan shorter chunks with --chunk-frames, or raise the function timeout)",
            }
        )
    return _dump(result)


def _dump(result: WorkerResult) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True)
