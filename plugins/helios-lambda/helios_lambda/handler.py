"""The Lambda function handler: `helios_lambda.handler.handler(event, context)`, a thin shell around WorkerRuntime.

The event is the worker payload `{"jobUrl", "chunkId", "store"?, "force"?}` (or an API Gateway / function
URL event whose `body` holds it). The return value is the WorkerResult as JSON (camelCase); a chunk's
failure is a returned result, not an exception, so the client can tell a bad spec (not retryable) from a
crash. Shortly before the function's time limit the render is cancelled, and the result says so
(retryable) instead of Lambda killing the process mid-commit.

The original Helios worker payload `{"jobPath", "chunkIndex"}` (what its AwsLambdaAdapter sends) is accepted
too. It carries no store, so `HELIOS_STORE` is used when set (else the job's own folder, as for ours). Its
answer also carries the original response fields, `statusCode` (200, 400 for a bad event, 500 for a failed
chunk) and a JSON `body` with `exitCode`, `output`, `stderr` and `message`, because the original client
reads those and takes an answer without `body` for a success.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from pydantic import ValidationError

from helios_kit.errors import SpecError
from helios_kit.protocol import WorkerRequest, WorkerResult, WorkerStatus
from helios_kit.spec import format_validation_error, parse_json_object
from helios_kit.worker.runtime import WorkerRuntime, handle_request

#: Seconds kept in reserve before the Lambda deadline to stop the render and report.
DEADLINE_MARGIN_S = 10.0

_runtime: WorkerRuntime | None = None


def _get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:  # reused across warm invocations; each run has its own temp workspace
        from helios_kit.redact import install as install_redaction
        from helios_kit.render.netguard import enable_for_workers

        install_redaction()  # CloudWatch gets no credentials, tokens or signatures
        enable_for_workers()  # a composition cannot reach the metadata service or the loopback
        _runtime = WorkerRuntime(os.environ.get("HELIOS_WORKSPACE", "/tmp"))
    return _runtime


#: Keys of the original Helios worker payload, and ours they stand for.
ORIGINAL_KEYS = {"jobPath": "jobUrl", "chunkIndex": "chunkId"}


def _unwrap(event: Any) -> Any:
    """The payload itself: an API Gateway / function URL event's `body` (base64 or not), or a JSON string,
    parsed through the one guarded JSON parser (deep nesting is a bad event, not a crash)."""
    if isinstance(event, dict) and "body" in event and not {"jobUrl", "jobPath"} & event.keys():
        body = event["body"]
        if event.get("isBase64Encoded"):
            import base64
            import binascii

            try:
                body = base64.b64decode(body, validate=True)
            except (binascii.Error, TypeError, ValueError) as error:
                raise SpecError(f"body: not base64 ({error})") from None
        if not isinstance(body, (str, bytes)):
            raise SpecError(f"body: must be a JSON string, got {type(body).__name__}")
        return parse_json_object(body, "body")
    if isinstance(event, (str, bytes)):
        return parse_json_object(event, "event")
    return event


def _from_original(event: dict[str, Any]) -> dict[str, Any]:
    """`{"jobPath", "chunkIndex"}` (the original Helios payload) → `{"jobUrl", "chunkId", "store"}`."""
    if {"jobUrl", "chunkId"} & event.keys():
        raise SpecError("give jobUrl and chunkId, or the original jobPath and chunkIndex, not both")
    job_path, chunk_index = event.get("jobPath"), event.get("chunkIndex")
    if not isinstance(job_path, str) or not job_path:
        raise SpecError(f"jobPath: must be the job file's path or URL, got {job_path!r}")
    if not isinstance(chunk_index, int) or isinstance(chunk_index, bool) or chunk_index < 0:
        raise SpecError(f"chunkIndex: must be a chunk id (an integer >= 0), got {chunk_index!r}")
    converted = {key: value for key, value in event.items() if key not in ORIGINAL_KEYS}
    converted.update(jobUrl=job_path, chunkId=chunk_index)
    if converted.get("store") is None and os.environ.get("HELIOS_STORE"):
        converted["store"] = os.environ["HELIOS_STORE"]
    return converted


def _is_original(payload: Any) -> bool:
    return isinstance(payload, dict) and bool(ORIGINAL_KEYS.keys() & payload.keys())


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Run one chunk; returns the WorkerResult as a JSON-ready dict."""
    original = _is_original(event)
    try:
        payload = _unwrap(event)
        original = _is_original(payload)
        request = WorkerRequest.model_validate(_from_original(payload) if original else payload)
    except ValidationError as error:
        bad = WorkerResult.failed(None, f"bad event: {format_validation_error(error)}", retryable=False)
        return _dump(bad, original=original)
    except SpecError as error:
        return _dump(WorkerResult.failed(None, f"bad event: {error}", retryable=False), original=original)

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
        result = handle_request(_get_runtime(), request, cancel=cancel)
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
    return _dump(result, original=original)


def _dump(result: WorkerResult, *, original: bool = False) -> dict[str, Any]:
    answer = result.model_dump(mode="json", by_alias=True)
    if original:
        status = 200 if result.ok else (400 if result.chunk_id is None else 500)
        body = {"exitCode": result.exit_code, "output": result.stdout, "stderr": result.stderr}
        if not result.ok:
            body["message"] = result.stderr
        answer.update(statusCode=status, body=json.dumps(body))
    return answer
