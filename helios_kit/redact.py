"""Redaction of credentials in log output: no log level ever prints a token, a key or a signature.

:func:`redact` replaces secret values in a line of text: `Authorization` headers (AWS SigV4, Bearer, Basic),
`X-Amz-Security-Token`, signatures and credentials in presigned URLs (`X-Amz-Signature`,
`X-Goog-Signature`, `Signature=`), `SessionToken`/`SecretAccessKey` in JSON, OAuth tokens, JWTs (Google ID
tokens), and the literal values of the credential variables in the environment (`AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, ...).

:func:`install` sets a log-record factory, so every record of every logger (botocore's and urllib3's wire
dumps, httpx/httpcore, ours) is redacted once when it is made, whichever handler prints it later;
exception tracebacks attached to a record are formatted and redacted too. The CLI, the worker server and
the Lambda handler call it at start-up. It is idempotent.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from typing import Any

MASK = "[REDACTED]"

_KEYS = (
    r"x-amz-security-token|x-amz-signature|x-amz-credential|x-goog-signature|x-goog-credential|"
    r"proxy-authorization|authorization|sessiontoken|session_token|secretaccesskey|secret_access_key|"
    r"aws_secret_access_key|aws_session_token|access_token|id_token|refresh_token|client_secret|"
    r"password|set-cookie|cookie|credential|signature|token|sig"
)
_LEAD = r"(?<![A-Za-z0-9_-])"
#: `'Authorization': b'AWS4-HMAC-SHA256 ...'`, `"SessionToken": "..."`: the whole quoted value.
_QUOTED = re.compile(_LEAD + r"(" + _KEYS + r")(['\"]?\s*[:=]\s*b?)(['\"])(.*?)(\3)", re.IGNORECASE)
#: `Authorization: Bearer x`, `?X-Amz-Signature=abc&`, `token=abc`: the value up to a delimiter.
_BARE = re.compile(
    _LEAD + r"(" + _KEYS + r")(\s*[:=]\s*)((?:Bearer|Basic|AWS4-HMAC-SHA256)\s+)?([^\s'\"&,;}\]\)]+)",
    re.IGNORECASE,
)
#: A JSON Web Token (Google ID tokens, OAuth access tokens in JWT form).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
#: Environment variables whose values are secrets wherever they appear.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN")
_MIN_LITERAL = 6


def _secret_literals() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= _MIN_LITERAL), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every credential, token and signature value replaced by `[REDACTED]`."""
    if not text:
        return text
    text = _QUOTED.sub(lambda m: f"{m[1]}{m[2]}{m[3]}{MASK}{m[5]}", text)
    text = _BARE.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{MASK}", text)
    text = _JWT.sub(MASK, text)
    for literal in _secret_literals():
        text = text.replace(literal, MASK)
    return text


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Replace the record's message (and formatted traceback) by its redacted text."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what can be shown
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A handler or logger filter that redacts the records passing through it (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_installed = False


def install() -> None:
    """Redact every log record from now on (a record factory) and on the root logger's handlers."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    _installed = True
