"""What reaches the upstream, and what is counted, for bodies the gateway lets through: the
body as the gateway read it (one value per key, whatever the client's bytes repeated or
escaped), and counted even when it is refused for its depth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from deploy.stack import Endpoints
from tests.gateway.conftest import StartGateway
from tests.gateway.counted import captured_logs, loud
from tests.gateway.harness import FakeKeyService, new_key, usage_events
from tests.served import Served

MESSAGES = [{"role": "user", "content": "hi"}]


def _capture_upstream(bodies: list[bytes]) -> FastAPI:
    """An upstream that keeps the bytes it was sent and answers a fixed completion, with no
    usage for ``test/quiet`` (so the gateway estimates it from the body)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        bodies.append(body)
        answer: dict[str, Any] = {
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        }
        if b'"test/quiet"' not in body:
            answer["usage"] = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
        return Response(json.dumps(answer), media_type="application/json")

    return app


@dataclass
class Capture:
    """A gateway in front of the capturing upstream, and a key for it."""

    gateway: Served
    bodies: list[bytes]
    headers: dict[str, str]
    key_id: str


@pytest.fixture
async def capture(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    catalogue: Path,
    tmp_path: Path,
) -> AsyncIterator[Capture]:
    bodies: list[bytes] = []
    upstream = await Served(_capture_upstream(bodies)).start()
    models = (("test/capture", "test/capture"), ("test/renamed", "u"), ("test/quiet", "test/quiet"))
    path = tmp_path / "capture.yaml"
    path.write_text(
        catalogue.read_text()
        + "".join(
            f"  - id: {model_id}\n    upstream:\n      base_url: {upstream.url}/v1\n"
            f'      model: "{upstream_model}"\n'
            for model_id, upstream_model in models
        )
    )
    try:
        gateway = await make_gateway(catalogue=path)
        secret, state = new_key()
        keyservice[0].add(state)
        headers = {"Authorization": f"Bearer {secret}", "content-type": "application/json"}
        yield Capture(gateway, bodies, headers, state.key_id)
    finally:
        await upstream.stop()


async def test_a_body_reaches_the_upstream_as_the_gateway_read_it(capture: Capture) -> None:
    # Odd but valid: spacing, escapes, non-ASCII, key order, long numbers, NUL.
    raw = (
        b'{ "messages" : [ {"role":"user","content":"caf\\u00e9 \xe2\x98\x83 \\u0000"} ],\n'
        b'  "model":"test/capture", "seed": 1234567890123456789,'
        b' "temperature": 1.0000000000000000001, "z": [[[[]]]], "a": "\\ud83d\\ude00" }'
    )
    async with httpx.AsyncClient(base_url=capture.gateway.url, timeout=30) as client:
        same = await client.post("/v1/chat/completions", content=raw, headers=capture.headers)
        renamed_raw = raw.replace(b'"test/capture"', b'"test/renamed"')
        renamed = await client.post(
            "/v1/chat/completions", content=renamed_raw, headers=capture.headers
        )
    assert (same.status_code, renamed.status_code) == (200, 200)
    assert json.loads(capture.bodies[0]) == json.loads(raw)
    rewritten = json.loads(capture.bodies[1])
    assert rewritten["model"] == "u"
    assert rewritten["messages"] == json.loads(raw)["messages"]
    assert rewritten["a"] == "\U0001f600"
    assert rewritten["seed"] == 1234567890123456789


async def test_a_key_spelled_with_escapes_reaches_the_upstream_once_as_read(
    capture: Capture,
) -> None:
    # The gateway reads the last "stream" (true, escaped): an upstream that takes the first
    # would stream nothing the gateway metered, or stream what it did not.
    raw = (
        b'{"model": "test/capture", "messages": [{"role": "user", "content": "hi"}],'
        b' "stream": false, "str\\u0065am": true}'
    )
    async with httpx.AsyncClient(base_url=capture.gateway.url, timeout=30) as client:
        await client.post("/v1/chat/completions", content=raw, headers=capture.headers)
    (sent,) = capture.bodies
    assert sent.count(b'"stream"') == 1
    assert b"\\u0065" not in sent
    assert json.loads(sent)["stream"] is True
    assert json.loads(sent)["stream_options"] == {"include_usage": True}


async def test_a_repeated_model_key_reaches_the_upstream_once(capture: Capture) -> None:
    # The gateway routes and meters the last "model"; an upstream that reads the first must
    # not be able to serve another model than the one metered.
    raw = (
        b'{"model": "test/renamed", "messages": [{"role": "user", "content": "hi"}],'
        b' "model": "test/capture"}'
    )
    async with httpx.AsyncClient(base_url=capture.gateway.url, timeout=30) as client:
        answer = await client.post("/v1/chat/completions", content=raw, headers=capture.headers)
    assert answer.status_code == 200
    sent = capture.bodies[-1]
    assert sent.count(b'"model"') == 1
    assert json.loads(sent)["model"] == "test/capture"


async def test_a_body_too_deep_to_write_again_is_refused_and_counted(
    capture: Capture, endpoints: Endpoints, topic_prefix: str
) -> None:
    # 1,000 levels: orjson reads it, but writes at most 254: the upstream would get bytes the
    # gateway did not read. Refused with 400, counted, and the connection stays usable.
    deep = b"[" * 1000 + b"]" * 1000
    raw = (
        b'{"model": "test/quiet", "messages": [{"role": "user", "content": '
        b'[{"type": "text", "text": %s}]}]}' % deep
    )
    with captured_logs() as logs:
        async with httpx.AsyncClient(base_url=capture.gateway.url, timeout=30) as client:
            answer = await client.post(
                "/v1/chat/completions",
                content=raw,
                headers={**capture.headers, "x-request-id": "deep-1"},
            )
            after = await client.post(
                "/v1/chat/completions",
                json={"model": "test/quiet", "messages": MESSAGES},
                headers={**capture.headers, "x-request-id": "after-1"},
            )
    assert (answer.status_code, after.status_code) == (400, 200)
    assert "nested too deeply" in answer.json()["error"]["message"]
    assert len(capture.bodies) == 1
    events = {
        e.request_id: e
        for e in await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2, timeout=60)
    }
    deep_event, after_event = events["deep-1"], events["after-1"]
    assert (deep_event.model, deep_event.status_code) == ("test/quiet", 400)
    assert after_event.usage_source == "estimated"
    assert after_event.input_tokens > 0
    assert not loud(logs)
