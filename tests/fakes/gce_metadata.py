"""A fake GCE metadata server on 127.0.0.1 that issues Google-style ID tokens signed by a local RSA key.

google-auth's `fetch_id_token` finds it through `GCE_METADATA_HOST` / `GCE_METADATA_IP` (both set, so the
real 169.254.169.254 is never contacted); `/certs` serves the signing certificate in Google's
`{"kid": "<x509 PEM>"}` format, so `id_token.verify_token(..., certs_url=...)` can check the tokens.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from fakes.loopback import LoopbackHTTPServer

ISSUER = "https://accounts.google.com"
EMAIL = "helios-invoker@test-project.iam.gserviceaccount.com"


class SigningKey:
    """An RSA key with a self-signed certificate, able to sign RS256 JWTs."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, audience: str, *, lifetime: int = 3600, **claims: Any) -> str:
        from google.auth import crypt, jwt

        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": "1234567890",
            "email": EMAIL,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime,
            **claims,
        }
        signer = crypt.RSASigner.from_string(self.private_pem, self.kid)
        return jwt.encode(signer, payload).decode()


class FakeMetadataServer:
    """Serves `/computeMetadata/v1/instance/service-accounts/default/identity` and `/certs`."""

    def __init__(self) -> None:
        self.key = SigningKey("fake-key-1")
        self.issued: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/certs":
                    return self._send(200, json.dumps({owner.key.kid: owner.key.cert_pem}), "application/json")
                if url.path in ("", "/"):
                    return self._send(200, "computeMetadata/\n")
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._send(403, "Missing Metadata-Flavor: Google header")
                if url.path == "/computeMetadata/v1/instance/service-accounts/default/":
                    info = {
                        "email": EMAIL,
                        "aliases": ["default"],
                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    }
                    return self._send(200, json.dumps(info), "application/json")
                if url.path == "/computeMetadata/v1/universe/universe-domain":
                    return self._send(200, "googleapis.com")
                if url.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
                    audience = (parse_qs(url.query).get("audience") or [""])[0]
                    if not audience:
                        return self._send(400, "audience required")
                    token = owner.key.sign(audience)
                    owner.issued.append(audience)
                    return self._send(200, token)
                return self._send(404, "not found")

            do_POST = do_GET

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def certs_url(self) -> str:
        return f"http://{self.host}/certs"

    def start(self) -> FakeMetadataServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fake_metadata(monkeypatch: Any) -> Iterator[FakeMetadataServer]:
    """Run the fake and point google-auth at it (env vars plus the host google-auth read at import)."""
    server = FakeMetadataServer().start()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", server.host)
    monkeypatch.setenv("GCE_METADATA_IP", server.host)
    monkeypatch.setenv("GCE_METADATA_MTLS_MODE", "none")
    from google.auth.compute_engine import _metadata

    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", server.host)
    try:
        yield server
    finally:
        server.stop()
