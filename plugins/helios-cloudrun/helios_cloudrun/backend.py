"""The `cloudrun` backend: POST each chunk to a Cloud Run service running `helios worker serve`.

Every request carries `{"jobUrl", "chunkId", "store"}` and a Google ID token for the service
(`google.oauth2.id_token.fetch_id_token(Request(), audience)`: a service account key from
`GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server on GCP), cached until shortly before it expires.
The service answers a WorkerResult. Mapping to the executor's retries: 200/422 (and a 503 with a JSON body)
carry the worker's own result; 429 and the front end's own 503 (no instance free) back off here
(RemoteBackend.send_with_throttle: a warning line each, no executor attempt spent, bounded by
`--throttle-attempts` and `--throttle-max-wait`), then are reported retryable; other 5xx, timeouts and
connection errors are retryable; 401/403 (token audience, IAM) are fatal for the job (the executor starts
no other chunk); 400/413 are not retryable.

The payload, cancel and timeout, and reading the answer are :class:`helios_kit.backends.remote.RemoteBackend`'s;
this module only POSTs with an ID token and says what the HTTP statuses mean. httpx (the client) is imported
when a backend is built, not when its options are declared (`helios job run` builds every backend's flags).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from helios_kit.backends.base import BackendOptions
from helios_kit.backends.remote import THROTTLE_MAX_WAIT_S, RemoteBackend, RemoteFailure, Throttled
from helios_kit.errors import HeliosError, describe
from helios_kit.pricing import Pricing
from helios_kit.protocol import WorkerRequest

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("helios.cloudrun")

#: Cloud Run's longest request timeout (60 minutes).
CLOUD_RUN_MAX_TIMEOUT_S = 3600.0
_TOKEN_MARGIN_S = 300
#: Statuses whose body is the worker's own WorkerResult (helios_kit.worker.server); a 503 is the worker's
#: only when it carries a JSON object (Google's front end answers 503 pages of its own).
_WORKER_STATUSES = (200, 422)


#: Cloud Run list prices (request-based billing, tier 1): per vCPU-second, GiB-second and request, billed
#: per 100 ms. One instance per chunk with 2 vCPU and 2 GiB assumed (`--price vcpu=4` etc. to change).
CLOUD_RUN_PRICING = Pricing(
    backend="cloudrun",
    memory_gb=2.0,
    vcpu=2.0,
    gb_second_usd=0.0000025,
    vcpu_second_usd=0.000024,
    request_usd=0.0000004,
    billing_increment_s=0.1,
    startup_s=3.0,
    speed=1.0,
    concurrency=50,
)


class CloudRunConfigError(HeliosError):
    """A cloudrun backend option that cannot work (missing service URL)."""


class CloudRunOptions(BackendOptions):
    service_url: str | None = Field(None, description="The service URL, e.g. https://helios-worker-xyz.a.run.app")
    audience: str | None = Field(None, description="ID-token audience (default: the service URL).")
    timeout: float = Field(CLOUD_RUN_MAX_TIMEOUT_S, gt=0, description="Seconds to wait for one chunk.")
    auth: bool = Field(True, description="Send a Google ID token (off for an unauthenticated local server).")
    throttle_attempts: int = Field(50, ge=1, description="Sends per attempt while the service answers 429/503.")
    throttle_max_wait: float = Field(
        THROTTLE_MAX_WAIT_S, gt=0, description="Seconds an attempt may spend backing off from 429/503."
    )


class CloudRunBackend(RemoteBackend):
    """Runs chunks on a Cloud Run service (one chunk per request, one request per instance)."""

    name = "cloudrun"
    Options = CloudRunOptions

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
        self.target = self.url
        self.audience = self.options.audience or self.options.service_url.rstrip("/")
        import httpx

        self._client = httpx.Client(
            timeout=httpx.Timeout(self.options.timeout, connect=15.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    def default_concurrency(self) -> int:
        return 50

    @classmethod
    def pricing(cls) -> Pricing:
        return CLOUD_RUN_PRICING

    def close(self) -> None:
        self.warn_in_flight()
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

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.options.auth:
            try:
                headers["Authorization"] = f"Bearer {self.id_token()}"
            except Exception as error:
                raise RemoteFailure(
                    f"cannot get a Google ID token for {self.audience}: {describe(error)}", retryable=True
                ) from None
        return headers

    # -- running ---------------------------------------------------------------------------------------
    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> Any:
        """POST the request (retrying 429 here); returns the worker's answer, raises for other statuses."""
        payload = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        headers = self._headers()
        request_timeout = min(timeout or self.options.timeout, self.options.timeout)
        import httpx

        def post() -> httpx.Response:
            try:
                response = self._client.post(self.url, json=payload, headers=headers, timeout=request_timeout)
            except httpx.TimeoutException:
                raise RemoteFailure(f"no answer from {self.url} within {request_timeout:g} s", retryable=True) from None
            if response.status_code == 429 or (response.status_code == 503 and not _is_json_object(response)):
                raise Throttled(f"HTTP {response.status_code}")
            return response

        try:
            response = self.send_with_throttle(
                request,
                post,
                cancel,
                attempts=self.options.throttle_attempts,
                max_wait=self.options.throttle_max_wait,
            )
        except Throttled as error:
            raise Throttled(f"{error} from {self.url}") from None
        status = response.status_code
        if status in _WORKER_STATUSES or status == 503:
            return response.content
        raise self._status_failure(response)

    def _status_failure(self, response: httpx.Response) -> RemoteFailure:
        status = response.status_code
        body = response.json() if _is_json_object(response) else None
        reason = body.get("error") if isinstance(body, dict) else response.text[:200].strip()
        message = f"{self.url} answered HTTP {status}: {reason or response.reason_phrase}"
        fatal = status in (401, 403)
        if fatal:
            message += " (check the ID token audience and that the caller has roles/run.invoker)"
        return RemoteFailure(message, retryable=status == 429 or status >= 500, fatal=fatal)

    def describe_failure(self, error: Exception) -> RemoteFailure:
        import httpx

        if isinstance(error, httpx.HTTPError):
            return RemoteFailure(f"cannot reach {self.url}: {describe(error)}", retryable=True)
        return super().describe_failure(error)


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except (ValueError, RecursionError):
        return False
