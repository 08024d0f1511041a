"""The wire models: WorkerResult's status (no magic exit codes), `retryable` as data, results written by
older workers, and a remote backend's reading of whatever a worker answers."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.backends.base import ChunkContext
from helios_kit.backends.remote import RemoteBackend, RemoteFailure
from helios_kit.errors import BrowserFault, LoaderError, RenderError, SpecError
from helios_kit.protocol import WorkerRequest, WorkerResult, WorkerStatus
from helios_kit.spec import Chunk

results = st.builds(
    WorkerResult,
    chunk_id=st.none() | st.integers(min_value=0, max_value=10**6),
    status=st.sampled_from(WorkerStatus),
    stdout=st.text(max_size=40),
    stderr=st.text(max_size=40),
    output_file=st.none() | st.text(max_size=40),
    duration_ms=st.floats(min_value=0, max_value=1e9),
    retryable=st.booleans(),
    frames=st.integers(min_value=0, max_value=10**6),
)


@given(results)
def test_results_round_trip_as_camel_case_json(result: WorkerResult) -> None:
    wire = result.model_dump_json(by_alias=True)
    assert "exitCode" not in wire and json.loads(wire)["status"] == result.status.value
    assert WorkerResult.model_validate_json(wire) == result


@pytest.mark.parametrize(
    ("status", "ok", "code_retryable", "code_final"),
    [
        ("ok", True, 0, 0),
        ("skipped", True, 0, 0),
        ("failed", False, 1, 2),
        ("cancelled", False, 130, 130),
        ("timed_out", False, 124, 124),
    ],
)
def test_ok_and_the_worker_cli_exit_code_derive_from_the_status(
    status: str, ok: bool, code_retryable: int, code_final: int
) -> None:
    assert WorkerResult(status=status).ok is ok
    assert WorkerResult(status=status, retryable=True).exit_code == code_retryable
    assert WorkerResult(status=status, retryable=False).exit_code == code_final


@pytest.mark.parametrize(
    ("legacy", "status"),
    [
        ({"exitCode": 0}, "ok"),
        ({"exitCode": 0, "skipped": True}, "skipped"),
        ({"exitCode": 130, "retryable": False}, "cancelled"),
        ({"exitCode": 124}, "timed_out"),
        ({"exitCode": 2, "retryable": False}, "failed"),
        ({"exitCode": 1}, "failed"),
    ],
)
def test_results_of_workers_deployed_before_status_still_read(legacy: dict, status: str) -> None:
    result = WorkerResult.model_validate({"chunkId": 3, **legacy})
    assert result.status == status and result.chunk_id == 3


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (SpecError("chunks[0].frameCount: must be > 0"), False),
        (LoaderError("timeout"), True),
        (LoaderError("not found", retryable=False), False),
        (RenderError("composition threw at frame 3"), False),
        (BrowserFault("lost frame 7"), True),
        (RuntimeError("who knows"), True),
    ],
)
def test_results_from_errors_take_their_retryable(error: Exception, retryable: bool) -> None:
    result = WorkerResult.from_error(4, error)
    assert result.status is WorkerStatus.FAILED and result.retryable is retryable
    assert "\n" not in result.stderr and str(error).splitlines()[0] in result.stderr


class _Canned(RemoteBackend):
    """Answers whatever it was given (or raises it), so the shared parsing and mapping can be checked."""

    name = "canned"

    def __init__(self, answer: object) -> None:
        super().__init__()
        self.target = "canned worker"
        self.answer = answer
        self.requests: list[WorkerRequest] = []

    def invoke(self, request: WorkerRequest, *, cancel: threading.Event, timeout: float | None) -> object:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer == "hang":
            threading.Event().wait(5)
        return self.answer


CHUNK = Chunk(id=2, start_frame=10, frame_count=5, output_file="chunks/chunk-0002.mp4")
CONTEXT = ChunkContext(job_url="s3://b/job.json", job_dir=".", store_url="s3://b/out", force=True)


def run_canned(answer: object, **kwargs) -> WorkerResult:
    backend = _Canned(answer)
    kwargs.setdefault("cancel", threading.Event())
    return backend.run_chunk(None, CHUNK, CONTEXT, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("answer", [b"not json", b"[1, 2]", b'{"status": "maybe"}', b"{}", "<html>503</html>", 7])
def test_a_malformed_answer_is_a_failed_retryable_result_in_one_line(answer: object) -> None:
    result = run_canned(answer)
    assert result.status is WorkerStatus.FAILED and result.retryable and result.chunk_id == 2
    assert "canned worker answered no WorkerResult" in result.stderr and "\n" not in result.stderr


def test_the_workers_answer_and_the_payload() -> None:
    backend = _Canned(b'{"chunkId": 2, "status": "skipped", "frames": 5, "retryable": false}')
    result = backend.run_chunk(None, CHUNK, CONTEXT, cancel=threading.Event())  # type: ignore[arg-type]
    assert result.status is WorkerStatus.SKIPPED and result.frames == 5 and result.duration_ms > 0
    assert backend.requests == [WorkerRequest(job_url="s3://b/job.json", chunk_id=2, store="s3://b/out", force=True)]


def test_transport_failures_cancel_and_timeout() -> None:
    failed = run_canned(RemoteFailure("answered HTTP 403: denied", retryable=False))
    assert failed.status is WorkerStatus.FAILED and not failed.retryable
    assert failed.stderr == "chunk 2: answered HTTP 403: denied"
    crashed = run_canned(ConnectionResetError("peer reset"))
    assert crashed.status is WorkerStatus.FAILED and crashed.retryable and "peer reset" in crashed.stderr
    timed_out = run_canned("hang", timeout=0.2)
    assert timed_out.status is WorkerStatus.TIMED_OUT and timed_out.retryable
    assert "no answer within 0.2 s" in timed_out.stderr
    cancel = threading.Event()
    cancel.set()
    assert run_canned("hang", cancel=cancel).status is WorkerStatus.CANCELLED
