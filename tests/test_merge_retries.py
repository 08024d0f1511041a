"""A remote merge that fails in a way another attempt may get past is tried again (backing off), so a job
whose every chunk is done is not lost to one killed instance; a failure no attempt can get past is not."""

from __future__ import annotations

import threading

import pytest

from helios_kit import merging
from helios_kit.protocol import WorkerResult


class Flaky:
    name = "flaky"
    default_retries = 5

    def __init__(self, answers: list[WorkerResult]) -> None:
        self.answers = answers
        self.calls = 0

    def run_merge(self, spec, context, *, cancel):
        self.calls += 1
        return self.answers.pop(0)


class Ctx:
    spec = None

    def chunk_context(self):
        return None


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merging, "MERGE_RETRY_DELAY_S", 0.001)


def test_a_transient_merge_failure_is_tried_again() -> None:
    killed = WorkerResult.failed(None, "merge: function failed (Unhandled): signal: killed", retryable=True)
    backend = Flaky([killed, killed, WorkerResult(status="ok", frames=12)])
    result = merging._merge_with_retries(Ctx(), backend, threading.Event())  # type: ignore[arg-type]
    assert result is not None and result.ok and backend.calls == 3


@pytest.mark.parametrize(
    "answer",
    [
        WorkerResult.failed(None, "merge: composition threw", retryable=False),
        WorkerResult.failed(None, "merge: AccessDenied", retryable=True).model_copy(update={"fatal": True}),
    ],
    ids=["final", "fatal"],
)
def test_a_final_or_fatal_merge_failure_is_not(answer: WorkerResult) -> None:
    backend = Flaky([answer, WorkerResult(status="ok")])
    result = merging._merge_with_retries(Ctx(), backend, threading.Event())  # type: ignore[arg-type]
    assert result is not None and not result.ok and backend.calls == 1


def test_attempts_stop_at_the_backends_retries() -> None:
    killed = WorkerResult.failed(None, "merge: killed", retryable=True)
    backend = Flaky([killed] * 10)
    backend.default_retries = 2
    result = merging._merge_with_retries(Ctx(), backend, threading.Event())  # type: ignore[arg-type]
    assert result is not None and not result.ok and backend.calls == 3
