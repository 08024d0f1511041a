"""`helios job run --webhook URL`: POST a signed JSON when a run completes, fails or is cancelled.

The body is a :class:`WebhookPayload` (camelCase JSON, UTF-8). It is signed with HMAC-SHA256 over the exact
body bytes, keyed with the secret from `--webhook-secret` or `HELIOS_WEBHOOK_SECRET`, and sent as

    X-Helios-Signature: sha256=<hex digest>
    X-Helios-Event: job.completed | job.failed | job.cancelled

A receiver recomputes the digest over the raw body and compares in constant time (:func:`verify`); the
body's `at` (Unix time) lets it refuse replays. Delivery retries with exponential backoff and jitter
(tenacity) on connection errors, timeouts, 429 and 5xx; another 4xx is final. A delivery that fails is
reported as one warning line: the render's outcome does not depend on it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from helios_kit.errors import SpecError, describe
from helios_kit.protocol import WireModel

if TYPE_CHECKING:  # httpx is imported when a webhook is used: a run without one does not load it
    import httpx

SIGNATURE_HEADER = "X-Helios-Signature"
EVENT_HEADER = "X-Helios-Event"
SECRET_ENV = "HELIOS_WEBHOOK_SECRET"

WebhookEvent = Literal["job.completed", "job.failed", "job.cancelled"]


class WebhookPayload(WireModel):
    """What a webhook receives about one finished run."""

    event: WebhookEvent
    job_id: str
    run_id: str | None = None
    state: str
    summary: str | None = None
    output: str | None = None
    frames: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    cost_usd: float | None = None
    at: float = Field(default_factory=time.time)


class WebhookFailed(Exception):
    """A delivery attempt that failed; `retryable` says whether another may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def sign(secret: str, body: bytes) -> str:
    """The X-Helios-Signature value of `body`: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """True when `signature` (the header) is `body`'s, compared in constant time."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


def webhook_secret(flag: str | None) -> str:
    """The signing secret from the flag or the environment; SpecError (one line) when there is none."""
    secret = flag or os.environ.get(SECRET_ENV, "")
    if not secret:
        raise SpecError(f"--webhook needs a signing secret: --webhook-secret or {SECRET_ENV}", retryable=False)
    return secret


def check_webhook_url(url: str) -> str:
    import httpx

    if not url.startswith(("http://", "https://")) or not httpx.URL(url).host:
        raise SpecError(f"--webhook: {url!r} is not an http(s) URL", retryable=False)
    return url


class Webhook:
    """Delivers payloads to one URL, signed, with retries."""

    def __init__(
        self, url: str, secret: str, *, attempts: int = 5, first_wait_s: float = 0.5, timeout_s: float = 10.0
    ) -> None:
        self.url = check_webhook_url(url)
        self.secret = secret
        self.attempts = attempts
        self.first_wait_s = first_wait_s
        self.timeout_s = timeout_s
        self.tries = 0

    def _post_once(self, client: httpx.Client, body: bytes, event: str) -> int:
        import httpx

        self.tries += 1
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body), EVENT_HEADER: event}
        try:
            response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise WebhookFailed(describe(error), retryable=True) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise WebhookFailed(f"HTTP {response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise WebhookFailed(f"HTTP {response.status_code}", retryable=False)
        return response.status_code

    def send(self, payload: WebhookPayload) -> int:
        """POST `payload`; returns the final HTTP status; raises WebhookFailed after the last try."""
        body = payload.model_dump_json(by_alias=True).encode()
        retrying = Retrying(
            retry=retry_if_exception(lambda error: isinstance(error, WebhookFailed) and error.retryable),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.first_wait_s, max=30) + wait_random(0, self.first_wait_s),
            reraise=True,
        )
        import httpx

        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            return retrying(self._post_once, client, body, payload.event)

    def notify(self, payload: WebhookPayload) -> str | None:
        """Send; None when delivered, else one line saying why not (for a warning)."""
        try:
            self.send(payload)
        except WebhookFailed as error:
            return f"webhook {self.url}: not delivered after {self.tries} tries: {error}"
        return None
