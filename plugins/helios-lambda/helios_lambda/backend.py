"""The `lambda` backend: invoke an AWS Lambda function (RequestResponse) once per chunk.

The payload is `{"jobUrl", "chunkId", "store"}`; the function (`helios_lambda.handler.handler`) renders the
chunk into the store and returns a WorkerResult. Mapping to the executor's retries:

* the handler's own result is passed through (`retryable` as the worker decided);
* `FunctionError` (an unhandled exception, out of memory, the function's timeout) → retryable;
* throttling (`TooManyRequestsException`, HTTP 429) is retried here with jittered backoff (tenacity), then
  reported retryable; other 5xx service errors, read/connect timeouts and connection errors → retryable;
* a missing function, access denied, an invalid payload → not retryable, one line naming the function.

botocore's own retries are switched off so every retry is visible and bounded by the executor.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pydantic import Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext, WorkerRequest, WorkerResult
from helios_kit.backends.remote import Interrupted, call_interruptibly
from helios_kit.errors import HeliosError
from helios_kit.spec import Chunk, JobSpec

log = logging.getLogger("helios.lambda")

#: Lambda's hard cap on one invocation (15 minutes).
LAMBDA_MAX_SECONDS = 900.0
_THROTTLE_CODES = {
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "EC2ThrottledException",
}
_FATAL_CODES = {
    "ResourceNotFoundException",
    "AccessDeniedException",
    "AccessDenied",
    "InvalidParameterValueException",
    "RequestTooLargeException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "KMSAccessDeniedException",
    "ResourceConflictException",
    "InvalidRequestContentException",
}


class LambdaConfigError(HeliosError):
    """A lambda backend option that cannot work (no function name)."""


class LambdaOptions(BackendOptions):
    function: str | None = Field(None, description="Function name or ARN (e.g. helios-worker).")
    qualifier: str | None = Field(None, description="Version or alias to invoke.")
    region: str | None = Field(None, description="AWS region (default: the AWS config / environment).")
    endpoint_url: str | None = Field(None, description="Lambda API endpoint (an emulator; default AWS).")
    read_timeout: float = Field(
        LAMBDA_MAX_SECONDS + 60, gt=0, description="Seconds to wait for one invocation (Lambda stops at 900)."
    )
    connect_timeout: float = Field(10.0, gt=0)
    throttle_attempts: int = Field(8, ge=1, description="Tries per chunk while Lambda throttles (429).")
    render_fps: float = Field(
        4.0,
        gt=0,
        description="Frames/s one function renders; used to warn about chunks planned too long for the 15-minute cap.",
    )
    max_connections: int = Field(1000, ge=1, description="HTTP connection pool size (>= --concurrency).")


class _Throttled(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class LambdaBackend(Backend):
    """Runs chunks as synchronous Lambda invocations; hundreds in flight from one client's threads."""

    name = "lambda"
    Options = LambdaOptions
    parallelism = "thread"

    def __init__(self, options: LambdaOptions | None = None) -> None:
        super().__init__(options)
        self.options: LambdaOptions
        if not self.options.function:
            raise LambdaConfigError("backend lambda: --function is required (the Lambda function name or ARN)")
        import boto3
        from botocore.config import Config

        config = Config(
            read_timeout=self.options.read_timeout,
            connect_timeout=self.options.connect_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self.options.max_connections,
            tcp_keepalive=True,
        )
        session = boto3.session.Session()
        self.client = session.client(
            "lambda", region_name=self.options.region, endpoint_url=self.options.endpoint_url, config=config
        )
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        if self.options.read_timeout < LAMBDA_MAX_SECONDS:
            log.debug("lambda read timeout %.0f s is below Lambda's 900 s cap", self.options.read_timeout)

    def default_concurrency(self) -> int:
        return 100

    def close(self) -> None:
        self.client.close()

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)

    def check_chunk(self, spec: JobSpec, chunk: Chunk) -> None:
        """Warn (once per job) when a chunk is planned too long for one Lambda invocation."""
        estimate = chunk.frame_count / self.options.render_fps
        limit = min(LAMBDA_MAX_SECONDS, self.options.read_timeout)
        if estimate > 0.8 * limit:
            self._warn_once(
                f"long:{spec.job_id}",
                "warning: lambda: chunk %d has %d frames, about %.0f s at %.3g frames/s, close to or over the "
                "%.0f s limit of one invocation; plan shorter chunks (--chunk-frames %d)",
                chunk.id,
                chunk.frame_count,
                estimate,
                self.options.render_fps,
                limit,
                max(1, int(0.5 * limit * self.options.render_fps)),
            )

    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        started = time.monotonic()
        function = self.options.function

        def failed(message: str, retryable: bool) -> WorkerResult:
            return WorkerResult(
                chunk_id=chunk.id,
                exit_code=1,
                stderr=message,
                retryable=retryable,
                duration_ms=(time.monotonic() - started) * 1000,
            )

        if cancel.is_set():
            return WorkerResult(chunk_id=chunk.id, exit_code=130, stderr="cancelled", retryable=False)
        self.check_chunk(spec, chunk)
        for what, value in (("job", context.job_url), ("store", context.store_url)):
            if "://" not in value or value.startswith("file://"):
                self._warn_once(
                    f"local:{what}",
                    "warning: lambda: the %s %s is a local path; the function cannot "
                    "read it (use an s3:// or https:// URL)",
                    what,
                    value,
                )
        payload = WorkerRequest(
            job_url=context.job_url, chunk_id=chunk.id, store=context.store_url, force=context.force
        ).model_dump_json(by_alias=True, exclude_none=True)
        kwargs: dict[str, Any] = {"FunctionName": function, "InvocationType": "RequestResponse", "Payload": payload}
        if self.options.qualifier:
            kwargs["Qualifier"] = self.options.qualifier

        def invoke() -> dict[str, Any]:
            try:
                return self.client.invoke(**kwargs)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in _THROTTLE_CODES or status == 429:
                    detail = error.response.get("Error", {}).get("Message", "")
                    raise _Throttled(f"{code or 'HTTP 429'}: {detail}") from None
                raise

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Throttled) and not cancel.is_set()),
            stop=stop_after_attempt(self.options.throttle_attempts),
            wait=wait_random_exponential(multiplier=0.25, max=20),
            sleep=lambda seconds: cancel.wait(seconds) and None,
            reraise=True,
        )
        try:
            response = call_interruptibly(lambda: retrying(invoke), cancel, timeout)
        except Interrupted as error:
            if cancel.is_set() and str(error) == "cancelled":
                return WorkerResult(
                    chunk_id=chunk.id,
                    exit_code=130,
                    stderr="cancelled",
                    retryable=False,
                    duration_ms=(time.monotonic() - started) * 1000,
                )
            return failed(f"chunk {chunk.id}: invoking {function}: {error}", True)
        except _Throttled as error:
            return failed(
                f"chunk {chunk.id}: function {function} throttled ({error}) after "
                f"{self.options.throttle_attempts} tries",
                True,
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "") or "ClientError"
            message = error.response.get("Error", {}).get("Message", "") or str(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            retryable = code not in _FATAL_CODES and (status >= 500 or status == 0)
            return failed(f"chunk {chunk.id}: invoking {function}: {code}: {message}", retryable)
        except (ReadTimeoutError, ConnectTimeoutError) as error:
            return failed(f"chunk {chunk.id}: invoking {function} timed out: {error}", True)
        except (EndpointConnectionError, ConnectionClosedError) as error:
            return failed(f"chunk {chunk.id}: cannot reach Lambda: {error}", True)
        return self._result(chunk, response, started)

    def _result(self, chunk: Chunk, response: dict[str, Any], started: float) -> WorkerResult:
        elapsed = (time.monotonic() - started) * 1000
        function = self.options.function
        raw = response["Payload"].read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if response.get("FunctionError"):
            detail = ""
            if isinstance(body, dict):
                detail = f"{body.get('errorType', '')}: {body.get('errorMessage', '')}".strip(": ")
            return WorkerResult(
                chunk_id=chunk.id,
                exit_code=1,
                retryable=True,
                duration_ms=elapsed,
                stderr=f"chunk {chunk.id}: function {function} failed ({response['FunctionError']})"
                f"{': ' + detail if detail else ''}",
            )
        if not isinstance(body, dict) or "exitCode" not in body:
            return WorkerResult(
                chunk_id=chunk.id,
                exit_code=1,
                retryable=False,
                duration_ms=elapsed,
                stderr=f"chunk {chunk.id}: function {function} returned no WorkerResult "
                f"(is its handler helios_lambda.handler.handler?): {raw[:200]!r}",
            )
        result = WorkerResult.model_validate(body)
        return result.model_copy(update={"chunk_id": chunk.id, "duration_ms": elapsed})
