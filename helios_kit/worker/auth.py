"""ID-token checks of the HTTP worker: who may ask `helios worker serve` to render.

:class:`TokenVerifier` verifies the `Authorization: Bearer <Google ID token>` of a request with google-auth's
`id_token.verify_oauth2_token` (signature against Google's certificates, expiry, issuer
`accounts.google.com`, and the audience: normally the service URL). The certificates come from Google's URL
unless `certs_url` (`HELIOS_CERTS_URL`) points elsewhere, which the tests do (a loopback server with test
certificates); they are cached for `CERTS_TTL_S`, so a busy worker fetches them a few times an hour, not per
request.

The answer is an :class:`AuthProblem` (status and one line) or None: 401 without a bearer token, 403 for a
token that does not verify (bad signature, expired, another audience, another issuer).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel

CERTS_TTL_S = 300.0
#: google-auth's default certificates URL for verify_oauth2_token.
GOOGLE_OAUTH2_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class AuthProblem(BaseModel):
    """Why a request is refused: 401 (no credentials) or 403 (credentials that do not verify)."""

    status: int
    message: str


class _CertsRequest:
    """A google-auth transport Request that serves the certificates URL from `certs_url`, cached."""

    def __init__(self, certs_url: str | None) -> None:
        import google.auth.transport.requests

        self._inner = google.auth.transport.requests.Request()
        self._certs_url = certs_url
        self._cached: tuple[float, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if url != GOOGLE_OAUTH2_CERTS_URL or method != "GET":
            return self._inner(url, method=method, **kwargs)
        with self._lock:
            if self._cached is not None and self._cached[0] > time.monotonic():
                return self._cached[1]
        response = self._inner(self._certs_url or url, method=method, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cached = (time.monotonic() + CERTS_TTL_S, response)
        return response


class TokenVerifier:
    """Verifies Google ID tokens for one audience."""

    def __init__(self, audience: str, certs_url: str | None = None) -> None:
        self.audience = audience
        self._request = _CertsRequest(certs_url)

    def check(self, header: str | None) -> AuthProblem | None:
        """None when `header` (the Authorization header) carries a valid ID token for the audience."""
        if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
            return AuthProblem(status=401, message="missing bearer token (Authorization: Bearer <Google ID token>)")
        from google.oauth2 import id_token

        try:
            id_token.verify_oauth2_token(header[7:].strip(), self._request, audience=self.audience)
        except Exception as error:  # ValueError / GoogleAuthError / TransportError: all mean "not accepted"
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return AuthProblem(status=403, message=f"invalid ID token: {first[:200]}")
        return None
