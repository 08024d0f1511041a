"""No log level prints credentials, tokens or signatures: the redaction of helios_kit.redact on the shapes
botocore, urllib3 and httpx log (property-based), on records with tracebacks, and end to end: `helios -v job
run --backend lambda` against the Lambda emulator and moto S3 with a session token, whose output must show
the headers were logged (redacted) and never the token or the secret key."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit.redact import MASK, SECRET_ENV, RedactingFilter, redact

TESTS_DIR = Path(__file__).resolve().parent
HELIOS = shutil.which("helios", path=str(Path(sys.executable).parent)) or "helios"

TEMPLATES = [
    "{'X-Amz-Security-Token': b'%s', 'X-Amz-Date': b'20261202T120000Z'}",
    '{"X-Amz-Security-Token": "%s"}',
    "x-amz-security-token:%s\nx-amz-date:20261202T120000Z",
    "Authorization: Bearer %s",
    "'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261202/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=%s'",
    "Authorization: AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=host, Signature=abc",
    "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=%s&X-Amz-Expires=60",
    "GET https://b.s3.amazonaws.com/k?X-Amz-Security-Token=%s&X-Amz-Expires=60 HTTP/1.1",
    "https://storage.googleapis.com/b/o?X-Goog-Signature=%s",
    '{"Credentials": {"SessionToken": "%s", "SecretAccessKey": "x"}}',
    "headers={'authorization': 'Bearer %s'}",
    "access_token=%s&expires_in=3600",
]

token_text = st.text(alphabet="0123456789+/=ABCDEFabcdef", min_size=8, max_size=60).map(lambda t: "tok" + t)


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patterns alone must catch these (the literal values of the environment are a second net)."""
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)


@settings(max_examples=60, deadline=None)
@given(token=token_text, template=st.sampled_from(TEMPLATES))
def test_token_never_survives(token: str, template: str) -> None:
    line = template.replace("%s", token)
    out = redact(line)
    assert token not in out, out
    assert MASK in out


def test_harmless_text_is_kept() -> None:
    text = "chunk 3 of s3://renders/jobs/job.json: frames [0, 24) → s3://renders/out/chunk-3.mp4 (1234 bytes)"
    assert redact(text) == text
    assert redact("Found credentials in environment variables.") == "Found credentials in environment variables."


def test_environment_secret_values_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    assert redact("key wJalrXUtnFEMI/K7MDENG in a dump") == f"key {MASK} in a dump"


def test_filter_redacts_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("botocore.test-redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.DEBUG, logger="botocore.test-redaction"):
            logger.debug("Sending http request: %s", {"X-Amz-Security-Token": "tokSECRET123456"})
            try:
                raise RuntimeError("Authorization: Bearer tokTRACEBACK99999")
            except RuntimeError:
                logger.exception("failed")
    finally:
        logger.filters.clear()
    text = caplog.text
    assert "tokSECRET123456" not in text and "tokTRACEBACK99999" not in text, text
    assert text.count(MASK) >= 2


def test_verbose_cloud_run_prints_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`helios -v job run` with botocore's debug wire dumps: the session token is redacted everywhere."""
    from fakes.aws import make_bucket, moto_s3
    from fakes.cloudjobs import make_spec, upload_job
    from fakes.lambda_emulator import LambdaEmulator

    session_token = "FwoGZXIvYXdzEHelIoSSeSsIoNtOkEn0123456789abcdefABCDEF+/xyz=="
    secret_key = "HeLiOsSeCrEtKeY/0123456789+abcdefghij"
    monkeypatch.setenv("HELIOS_WORKER_RENDER", "fakes.renders:frame_index_render")
    monkeypatch.setenv("HELIOS_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    with moto_s3() as endpoint:
        make_bucket(endpoint, "renders")
        spec = make_spec(frames=8, chunks=2, job_id="redact-job")
        url = upload_job(spec, "s3://renders/jobs/redact")
        env = {
            **os.environ,
            "HELIOS_HOME": str(tmp_path / "home"),
            "AWS_SESSION_TOKEN": session_token,
            "AWS_SECRET_ACCESS_KEY": secret_key,
        }
        with LambdaEmulator(workers=1) as emulator:
            run = subprocess.run(
                [
                    HELIOS,
                    "-v",
                    "job",
                    "run",
                    url,
                    "--backend",
                    "lambda",
                    "--function",
                    emulator.function_name,
                    "--endpoint-url",
                    emulator.endpoint_url,
                    "--region",
                    "us-east-1",
                    "--store",
                    "s3://renders/out/redact",
                    "--quiet",
                    "--retry-delay",
                    "0.1",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "x-amz-security-token" in output.lower(), "botocore's debug dump of the headers is expected at -v"
    assert MASK in output
    assert session_token not in output
    assert secret_key not in output
    for fragment in (session_token[:16], session_token[-16:]):
        assert fragment not in output
