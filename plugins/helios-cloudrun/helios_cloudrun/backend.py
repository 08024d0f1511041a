"""The `cloudrun` backend: POST each chunk to a Cloud Run service running `helios worker serve`.

Every request carries `{"jobUrl", "chunkId", "store"}` and a Google ID token for the service
(`google.oauth2.id_token.fetch_id_token(Request(), audience)`: a service account key from
`GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server on GCP), cached until shortly before it expires.
The service answers a WorkerResult. Mapping to the executor's retries: 200/422/503 carry the worker's own
result; 429 (no instance free) is retried here with backoff, then reported retryable; 5xx, timeouts and
connection errors are retryable; 401/403 (token/IAM) and 400/413 are not.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import httpx
from pydantic import Field
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_random_exponential

from helios_kit.backends.base import Backend, BackendOptions, ChunkContext, WorkerRequest, WorkerResult
from helios_kit.backends.remote import Interrupted, call_interruptibly
from helios_kit.errors import HeliosError, describe
from helios_kit.spec import Chunk, JobSpec

log = logging.getLogger("helios.cloudrun")

#: Cloud Run's longest request timeout (60 minutes).
CLOUD_RUN_MAX_TIMEOUT_S = 3600.0
_TOKEN_MARGIN_S = 300


class CloudRunConfigError(HeliosError):
    """A cloudrun backend option that cannot work (missing service URL)."""


class CloudRunOptions(BackendOptions):
    service_url: str | None = Field(None, description="The service URL, e.g. https://helios-worker-xyz.a.run.app")
    audience: str | None = Field(None, description="ID-token audience (default: the service URL).")
    timeout: float = Field(CLOUD_RUN_MAX_TIMEOUT_S, gt=0, description="Seconds to wait for one chunk.")
    auth: bool = Field(True, description="Send a Google ID token (off for an unauthenticated local server).")
    throttle_attempts: int = Field(6, ge=1, description="Tries when the service answers 429 (no free instance).")


class CloudRunBackend(Backend):
    """Runs chunks on a Cloud Run service (one chunk per request, one request per instance)."""

    name = "cloudrun"
    Options = CloudRunOptions
    parallelism = "thread"

    def __init__(self, options: CloudRunOptions | None = None) -> None:
        super().__init__(options)
        self.options: CloudRunOptions
        if not self.options.service_url:
            raise CloudRunConfigError("backend cloudrun: --service-url is required (the Cloud Run service URL)")
        if not self.options.service_url.startswith(("http://", "https://")):
            raise CloudRunConfigError(
                f"backend cloudrun: --service-url must be an http(s) URL, got {self.options.service_url!r}"
            )
        self.url = self.options.service_url.rstrip("/") + "/"
        self.audience = self.options.audience or self.options.service_url.rstrip("/")
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.options.timeout, connect=15.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()
        self._warned_local = False

    def default_concurrency(self) -> int:
        return 50

    def close(self) -> None:
        self._client.close()

    # -- auth ------------------------------------------------------------------------------------------
    def id_token(self) -> str:
        """A Google ID token for the audience, fetched once and reused until 5 minutes before expiry."""
        with self._token_lock:
            if self._token is not None and self._token[1] - _TOKEN_MARGIN_S > time.time():
                return self._token[0]
            import google.auth.transport.requests
            from google.auth import jwt
            from google.oauth2 import id_token

            token = id_token.fetch_id_token(google.auth.transport.requests.Request(), self.audience)
            try:
                expiry = float(jwt.decode(token, verify=False).get("exp", 0))
            except Exception:
                expiry = time.time() + 600
            self._token = (token, expiry)
            return token

    # -- running ---------------------------------------------------------------------------------------
    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        started = time.monotonic()

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
        self._warn_local(context)
        payload = WorkerRequest(
            job_url=context.job_url, chunk_id=chunk.id, store=context.store_url, force=context.force
        ).model_dump(mode="json", by_alias=True, exclude_none=True)
        headers = {"Content-Type": "application/json"}
        if self.options.auth:
            try:
                headers["Authorization"] = f"Bearer {self.id_token()}"
            except Exception as error:
                return failed(f"cannot get a Google ID token for {self.audience}: {describe(error)}", True)
        request_timeout = min(timeout or self.options.timeout, self.options.timeout)

        def post() -> httpx.Response:
            return self._client.post(self.url, json=payload, headers=headers, timeout=request_timeout)

        retrying = Retrying(
            retry=retry_if_result(lambda r: r.status_code == 429 and not cancel.is_set()),
            stop=stop_after_attempt(self.options.throttle_attempts),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            sleep=lambda seconds: cancel.wait(seconds) and None,
            retry_error_callback=lambda state: state.outcome.result(),
        )
        try:
            response = call_interruptibly(lambda: retrying(post), cancel, timeout)
        except Interrupted as error:
            if cancel.is_set() and str(error) == "cancelled":
                return WorkerResult(
                    chunk_id=chunk.id,
                    exit_code=130,
                    stderr="cancelled",
                    retryable=False,
                    duration_ms=(time.monotonic() - started) * 1000,
                )
            return failed(f"chunk {chunk.id}: {self.url}: {error}", True)
        except httpx.TimeoutException:
            return failed(f"chunk {chunk.id}: no answer from {self.url} within {request_timeout:g} s", True)
        except httpx.HTTPError as error:
            return failed(f"chunk {chunk.id}: cannot reach {self.url}: {describe(error)}", True)
        return self._result(chunk, response, started)

    def _result(self, chunk: Chunk, response: httpx.Response, started: float) -> WorkerResult:
        elapsed = (time.monotonic() - started) * 1000
        status = response.status_code
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if status in (200, 422, 503) and isinstance(body, dict) and "exitCode" in body:
            result = WorkerResult.model_validate(body)
            return result.model_copy(update={"chunk_id": chunk.id, "duration_ms": elapsed})
        reason = body.get("error") if isinstance(body, dict) else response.text[:200].strip()
        message = f"chunk {chunk.id}: {self.url} answered HTTP {status}: {reason or response.reason_phrase}"
        retryable = status == 429 or status >= 500
        if status in (401, 403):
            message += " (check the ID token audience and that the caller has roles/run.invoker)"
        return WorkerResult(chunk_id=chunk.id, exit_code=1, stderr=message, retryable=retryable, duration_ms=elapsed)

    def _warn_local(self, context: ChunkContext) -> None:
        if self._warned_local:
            return
        for what, value in (("job", context.job_url), ("store", context.store_url)):
            if "://" not in value or value.startswith("file://"):
                log.warning(
                    "warning: cloudrun: the %s %s is a local path; the service cannot read it "
                    "(use an s3://, gs:// or https:// URL)",
                    what,
                    value,
                )
                self._warned_local = True
