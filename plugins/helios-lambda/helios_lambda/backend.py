"""The `lambda` backend: invoke an AWS Lambda function (RequestResponse) once per chunk.

The payload is `{"jobUrl", "chunkId", "store"}`; the function (`helios_lambda.handler.handler`) renders the
chunk into the store and returns a WorkerResult. Mapping to the executor's retries:

* the handler's own result is passed through (`retryable` as the worker decided);
* `FunctionError` (an unhandled exception, out of memory, the function's timeout) → retryable;
* throttling (`TooManyRequestsException`, HTTP 429) backs off here (RemoteBackend.send_with_throttle: a
  warning line per throttle, no executor attempt spent, at most `--throttle-attempts` sends and
  `--throttle-max-wait` seconds), then is reported retryable; other 5xx service errors, read/connect timeouts
  and connection errors → retryable;
* access denied, bad credentials or signature, a missing function (401/403) → fatal for the job: one line
  naming the function, and the executor starts no other chunk; an invalid payload → not retryable;
* an answer that is no WorkerResult (a handler that is not helios_lambda's) → retryable, quoting it.

The payload, cancel and timeout, and reading the answer are :class:`helios_kit.backends.remote.RemoteBackend`'s;
this module only invokes the function and says what Lambda's errors mean.

botocore's own retries are switched off so every retry is visible and bounded by the executor.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from pydantic import Field

from helios_kit.backends.base import BackendOptions, ChunkContext
from helios_kit.backends.remote import THROTTLE_MAX_WAIT_S, RemoteBackend, RemoteFailure, Throttled
from helios_kit.errors import HeliosError
from helios_kit.pricing import Pricing
from helios_kit.protocol import WorkerRequest
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
#: Codes no chunk of the job can get past: stop the job at the first (credentials, permissions, function).
_JOB_FATAL_CODES = {
    "ResourceNotFoundException",
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "KMSAccessDeniedException",
}
_FATAL_CODES = _JOB_FATAL_CODES | {
    "InvalidParameterValueException",
    "RequestTooLargeException",
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
    throttle_attempts: int = Field(50, ge=1, description="Sends per attempt while Lambda throttles (429).")
    throttle_max_wait: float = Field(
        THROTTLE_MAX_WAIT_S, gt=0, description="Seconds an attempt may spend backing off from throttles."
    )
    render_fps: float = Field(
        4.0,
        gt=0,
        description="Frames/s one function renders; used to warn about chunks planned too long for the 15-minute cap.",
    )
    max_connections: int = Field(1000, ge=1, description="HTTP connection pool size (>= --concurrency).")


#: AWS Lambda list prices (us-east-1, x86, first tier): per GB-second and per request, billed per 1 ms.
#: Memory is the function's setting (2 GB assumed; `--price memory_gb=...` or `--pricing FILE` to change).
LAMBDA_PRICING = Pricing(
    backend="lambda",
    memory_gb=2.0,
    gb_second_usd=0.0000166667,
    request_usd=0.0000002,
    billing_increment_s=0.001,
    startup_s=2.0,
    speed=1.0,
    concurrency=100,
)


class LambdaBackend(RemoteBackend):
    """Runs chunks as synchronous Lambda invocations; hundreds in flight from one client's threads."""

    name = "lambda"
    Options = LambdaOptions

    def __init__(self, options: LambdaOptions | None = None) -> None:
        super().__init__(options)
        self.options: LambdaOptions
        if not self.options.function:
            raise LambdaConfigError("backend lambda: --function is required (the Lambda function name or ARN)")
        self.target = f"function {self.options.function}"
        self._client: Any = None
        self._client_lock = threading.Lock()
        if not self.options.region:  # what making the client would refuse, said before any chunk runs
            import boto3

            if not boto3.session.Session().region_name:
                raise LambdaConfigError("backend lambda: no AWS region (give --region or set AWS_REGION)")
        if self.options.read_timeout < LAMBDA_MAX_SECONDS:
            log.debug("lambda read timeout %.0f s is below Lambda's 900 s cap", self.options.read_timeout)

    @property
    def client(self) -> Any:
        """The boto3 Lambda client, made at the first invocation: a re-run whose chunks are all complete
        invokes nothing and skips loading botocore's service model (about a second of CPU)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        """A boto3 Lambda client with botocore's own retries off (the executor's are visible and bounded)."""
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
        return session.client(
            "lambda", region_name=self.options.region, endpoint_url=self.options.endpoint_url, config=config
        )

    def default_concurrency(self) -> int:
        return 100

    @classmethod
    def pricing(cls) -> Pricing:
        return LAMBDA_PRICING

    def close(self) -> None:
        self.warn_in_flight()
        if self._client is not None:
            self._client.close()

    def check_chunk(self, spec: JobSpec, chunk: Chunk, context: ChunkContext) -> None:
        """Warn (once per job) when a chunk is planned too long for one Lambda invocation, and about local
        paths the function cannot read."""
        super().check_chunk(spec, chunk, context)
        estimate = chunk.frame_count / self.options.render_fps
        limit = min(LAMBDA_MAX_SECONDS, self.options.read_timeout)
        if estimate > 0.8 * limit:
            self.warn_once(
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

    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> Any:
        """Invoke the function (RequestResponse), retrying throttles here; returns its JSON payload."""
        kwargs: dict[str, Any] = {
            "FunctionName": self.options.function,
            "InvocationType": "RequestResponse",
            "Payload": request.model_dump_json(by_alias=True, exclude_none=True),
        }
        if self.options.qualifier:
            kwargs["Qualifier"] = self.options.qualifier
        response = self.send_with_throttle(
            request,
            lambda: self._invoke_once(kwargs),
            cancel,
            attempts=self.options.throttle_attempts,
            max_wait=self.options.throttle_max_wait,
        )
        raw = response["Payload"].read()
        if response.get("FunctionError"):
            raise RemoteFailure(
                f"{self.target} failed ({response['FunctionError']}){_error_detail(raw)}", retryable=True
            )
        return raw

    def _invoke_once(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.client.invoke(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _THROTTLE_CODES or status == 429:
                detail = error.response.get("Error", {}).get("Message", "")
                raise Throttled(f"{code or 'HTTP 429'}: {detail}") from None
            raise

    def describe_failure(self, error: Exception) -> RemoteFailure:
        """Throttling and service errors may pass; a missing function or access denied will not."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "") or "ClientError"
            message = error.response.get("Error", {}).get("Message", "") or str(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            retryable = code not in _FATAL_CODES and (status >= 500 or status == 0)
            fatal = code in _JOB_FATAL_CODES or status in (401, 403)
            hint = " (check the AWS credentials and lambda:InvokeFunction permission)" if fatal else ""
            return RemoteFailure(f"invoking {self.target}: {code}: {message}{hint}", retryable=retryable, fatal=fatal)
        if isinstance(error, (ReadTimeoutError, ConnectTimeoutError)):
            return RemoteFailure(f"invoking {self.target} timed out: {error}", retryable=True)
        if isinstance(error, (EndpointConnectionError, ConnectionClosedError)):
            return RemoteFailure(f"cannot reach Lambda: {error}", retryable=True)
        return super().describe_failure(error)


def _error_detail(raw: bytes) -> str:
    """`: <errorType>: <errorMessage>` of a function error's payload, when it has them."""
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return ""
    if not isinstance(body, dict):
        return ""
    detail = f"{body.get('errorType', '')}: {body.get('errorMessage', '')}".strip(": ")
    return f": {detail}" if detail else ""
