"""S3 on 127.0.0.1: moto's threaded server, dummy credentials, and the environment that points clients at it.

`AWS_ENDPOINT_URL` (read by botocore, so by boto3, s3fs and aiobotocore) is set explicitly, so nothing ever
leaves the machine; subprocesses started with :func:`aws_env` inherit the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment variables pointing every AWS client at `endpoint` with dummy credentials."""
    return {**DUMMY_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}


@contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto's server on 127.0.0.1 (free port), export the env for it, yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import httpx

    httpx.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()  # moto's state is process-wide
    saved = {key: os.environ.get(key) for key in aws_env(endpoint)}
    os.environ.update(aws_env(endpoint))
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
