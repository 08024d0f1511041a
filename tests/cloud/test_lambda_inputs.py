"""The Lambda handler takes the original Helios payload (`jobPath`, `chunkIndex`) as well as ours, answers
the original client in its own shape, and turns any bad event (deep JSON included) into one line."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fakes.renders import bytes_render

from helios_kit.planner import plan_job
from helios_kit.spec import MAX_JSON_DEPTH, RenderConfig, dumps


@pytest.fixture
def handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from helios_lambda import handler as module

    monkeypatch.delenv("HELIOS_STORE", raising=False)
    monkeypatch.setattr(module, "_runtime", module.WorkerRuntime(tmp_path / "ws", render=bytes_render))
    return module.handler


@pytest.fixture
def job(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "index.html").write_text("<p>hi</p>")
    spec = plan_job(RenderConfig(input="index.html", width=160, height=120, frame_count=6), concurrency=3)
    (folder / "job.json").write_text(dumps(spec))
    return folder / "job.json"


def test_the_original_payload_renders_its_chunk_and_answers_both_shapes(handler, job: Path) -> None:
    answer = handler({"jobPath": str(job), "chunkIndex": 2}, None)
    assert answer["status"] == "ok" and answer["chunkId"] == 2
    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert body["exitCode"] == 0 and "chunk 2" in body["output"] and "message" not in body
    assert (job.parent / "chunks" / "chunk-0002.mp4").is_file()


def test_our_payload_answers_only_our_shape(handler, job: Path) -> None:
    answer = handler({"jobUrl": str(job), "chunkId": 0}, None)
    assert answer["status"] == "ok" and "statusCode" not in answer and "body" not in answer


def test_the_original_payload_through_api_gateway(handler, job: Path) -> None:
    payload = json.dumps({"jobPath": str(job), "chunkIndex": 1}).encode()
    answer = handler({"body": base64.b64encode(payload).decode(), "isBase64Encoded": True}, None)
    assert answer["statusCode"] == 200 and answer["status"] == "ok"


def test_a_failed_original_chunk_is_a_500_with_the_message(handler, job: Path) -> None:
    answer = handler({"jobPath": str(job), "chunkIndex": 9}, None)
    assert answer["statusCode"] == 500 and not answer["retryable"]
    assert "unknown chunk id 9" in json.loads(answer["body"])["message"]


def test_the_original_payload_uses_helios_store(handler, job: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_STORE", str(tmp_path / "store"))
    answer = handler({"jobPath": str(job), "chunkIndex": 0}, None)
    assert answer["status"] == "ok"
    assert (tmp_path / "store" / "chunks" / "chunk-0000.mp4").is_file()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"jobPath": 3, "chunkIndex": 0}, "bad event: jobPath: must be the job file's path or URL, got 3"),
        ({"jobPath": "j.json", "chunkIndex": "0"}, "bad event: chunkIndex: must be a chunk id (an integer >= 0)"),
        ({"jobPath": "j.json", "chunkIndex": True}, "bad event: chunkIndex: must be a chunk id"),
        ({"jobPath": "j.json"}, "bad event: chunkIndex: must be a chunk id"),
        ({"jobPath": "j.json", "chunkIndex": 0, "jobUrl": "k.json"}, "bad event: give jobUrl and chunkId, or"),
    ],
)
def test_bad_original_payloads_are_a_400_in_one_line(handler, event, message) -> None:
    answer = handler(event, None)
    assert answer["status"] == "failed" and not answer["retryable"] and answer["stderr"].startswith(message)
    assert answer["statusCode"] == 400 and json.loads(answer["body"])["message"] == answer["stderr"]


@pytest.mark.parametrize("event", [{"body": "[" * 100_000}, "[" * 100_000, {"body": '{"a":' * 5000}])
def test_deeply_nested_events_are_one_line(handler, event) -> None:
    answer = handler(event, None)
    assert answer["status"] == "failed" and not answer["retryable"]
    assert answer["stderr"].startswith("bad event: ") and "\n" not in answer["stderr"]
    assert answer["stderr"].endswith(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")


def test_a_deeply_nested_job_file_is_not_retryable(handler, tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000)
    answer = handler({"jobPath": str(tmp_path / "deep.json"), "chunkIndex": 0}, None)
    assert answer["statusCode"] == 500 and not answer["retryable"] and "nested more than" in answer["stderr"]
