"""Property tests of the two worker entry points' parsing: whatever arrives, the Lambda handler returns a
WorkerResult and the server answers 200/400/413 with JSON, never a crash (the runtime is stubbed)."""

from __future__ import annotations

import asyncio
import json

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit.backends.base import WorkerResult
from helios_kit.worker.server import ServerConfig, create_app

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
events = st.one_of(
    json_values,
    st.fixed_dictionaries({"jobUrl": json_values, "chunkId": json_values}, optional={"store": json_values}),
    st.fixed_dictionaries({"body": st.text(max_size=60)}),
)


class StubRuntime:
    """Records what would run; never touches the network or the disk."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run(self, job_url, chunk_id, store=None, force=False, **_):
        self.calls.append((job_url, chunk_id, store, force))
        return WorkerResult(chunk_id=chunk_id, status="ok")


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_handler_always_answers_a_result(event) -> None:
    from helios_lambda import handler as module

    stub = StubRuntime()
    saved, module._runtime = module._runtime, stub
    try:
        result = module.handler(event, None)
    finally:
        module._runtime = saved
    assert isinstance(result, dict) and result["status"] in ("ok", "failed")
    json.dumps(result)
    valid = isinstance(event, dict) and isinstance(event.get("jobUrl"), str) and type(event.get("chunkId")) is int
    if valid and event["chunkId"] >= 0 and (event.get("store") is None or isinstance(event.get("store"), str)):
        assert result["status"] == "ok" and stub.calls[0][:2] == (event["jobUrl"], event["chunkId"])
    if result["status"] != "ok":
        assert not result["retryable"] and result["stderr"].startswith("bad event:") and not stub.calls


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_server_answers_json_with_a_client_status(body: bytes) -> None:
    stub = StubRuntime()
    app = create_app(stub, ServerConfig(max_body=200))

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post("/", content=body, headers={"Content-Type": "application/json"})

    response = asyncio.run(post())
    assert response.status_code in (200, 400, 413), response.text
    payload = response.json()
    if response.status_code == 413:
        assert len(body) > 200
    elif response.status_code == 400:
        assert payload["error"] and not stub.calls
    else:
        assert payload["status"] == "ok" and len(stub.calls) == 1
