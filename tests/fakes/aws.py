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
    try:
        with aws_env_exported(endpoint):
            yield endpoint
    finally:
        server.stop()


@contextmanager
def aws_env_exported(endpoint: str) -> Iterator[None]:
    """The environment pointing S3 clients at `endpoint` (and s3fs's instance cache cleared) while the block
    runs; the environment as it was afterwards."""
    import s3fs

    saved = {key: os.environ.get(key) for key in aws_env(endpoint)}
    os.environ.update(aws_env(endpoint))
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)


#: What an S3 request is for, by its key (first match wins); see :func:`request_kind`.
_KINDS = (
    (".helios/done/", "done-index"),
    (".lease-", "lease"),
    (".progress.json", "heartbeat"),
    (".helios/cancel/", "cancel-marker"),
    (".helios-probe-", "write-probe"),
    (".tmp-", "commit-temp"),
    (".done.json", "manifest"),
)


def request_kind(method: str, path: str, query: str, headers: dict[str, str]) -> str:
    """`<METHOD> <kind>` of one S3 request: a listing, a copy, or a done-index / lease / heartbeat /
    cancel-marker / write-probe / commit-temp / manifest / output / job object (path-style keys: /bucket/key)."""
    key = path.lstrip("/").partition("/")[2]
    if method == "GET" and (not key or "list-type" in query or "prefix=" in query):
        return "LIST"
    if method == "POST" and "delete" in query:
        return "POST batch-delete"
    if method == "PUT" and headers.get("x-amz-copy-source"):
        return "PUT copy"
    for mark, kind in _KINDS:
        if mark in key:
            return f"{method} {kind}"
    if key.startswith("jobs/"):
        return f"{method} job"
    return f"{method} output"


class CountingS3:
    """moto's S3 on 127.0.0.1 (threaded werkzeug server) behind a WSGI wrapper that counts requests by
    :func:`request_kind` and by caller: a client whose user agent carries `app/<name>` (botocore's
    `AWS_SDK_UA_APP_ID`) is counted under that name, any other under "other"; and the most requests it
    handled at once."""

    def __init__(self) -> None:
        import threading
        from collections import Counter

        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._in_flight = 0
        #: The most requests the server handled at once (since the last reset of it).
        self.max_in_flight = 0

        def counting(environ: dict, start_response: object) -> object:
            headers = {"x-amz-copy-source": environ.get("HTTP_X_AMZ_COPY_SOURCE", "")}
            kind = request_kind(
                environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), headers
            )
            agent = environ.get("HTTP_USER_AGENT", "")
            caller = agent.split("app/", 1)[1].split(" ", 1)[0] if "app/" in agent else "other"
            with self._lock:
                self.requests[(caller, kind)] += 1
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return app(environ, start_response)  # type: ignore[arg-type]
            finally:
                with self._lock:
                    self._in_flight -= 1

        self.server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def by_kind(self, caller: str | None = None) -> dict[str, int]:
        """Requests per kind (of one caller, or all)."""
        out: dict[str, int] = {}
        for (who, kind), count in self.requests.items():
            if caller is None or who == caller:
                out[kind] = out.get(kind, 0) + count
        return dict(sorted(out.items()))

    def total(self, caller: str | None = None) -> int:
        return sum(self.by_kind(caller).values())

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
