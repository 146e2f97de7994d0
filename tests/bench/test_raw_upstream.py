"""The bench's raw upstream answers in shapes the gateway's own usage parser reads, so a
benchmark through the gateway meters real usage instead of falling back to estimates."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bench.lib.raw_upstream import EMBED_DIMS, PROMPT_TOKENS, TOKENS, app
from services.gateway.usage.meter import StreamMeter, find_usage, from_upstream

pytestmark = pytest.mark.unit  # no server: `make test-unit`


async def call(
    method: str, path: str, payload: object = None
) -> tuple[int, dict[str, str], list[bytes]]:
    """The ASGI app driven directly: status, headers and each body piece it sent."""
    body = b"" if payload is None else orjson.dumps(payload)
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    pieces = [m.get("body", b"") for m in sent[1:]]
    assert sent[-1].get("more_body", False) is False
    return start["status"], headers, pieces


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_chat_json_usage_is_read_by_the_gateway() -> None:
    status, headers, pieces = await call("POST", "/v1/chat/completions", CHAT)
    body = b"".join(pieces)
    assert status == 200
    assert headers["content-type"] == "application/json"
    usage = from_upstream("/v1/chat/completions", find_usage(body))
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.source) == (
        PROMPT_TOKENS,
        len(TOKENS),
        "upstream",
    )
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "".join(TOKENS)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_is_sse_with_the_usage_chunk_when_asked(include_usage: bool) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}}
    status, headers, pieces = await call("POST", "/v1/chat/completions", payload)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    events = [e + b"\n\n" for e in b"".join(pieces).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]\n\n"
    assert len(pieces) > 3  # sent event by event, not as one body
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    assert all(meter.feed(event) for event in events)
    assert "".join(meter.output_text) == "".join(TOKENS)
    if include_usage:
        assert meter.usage is not None
        assert (meter.usage.input_tokens, meter.usage.output_tokens) == (PROMPT_TOKENS, len(TOKENS))
    else:
        assert meter.usage is None


async def test_embeddings_one_vector_per_input_with_usage() -> None:
    payload = {"model": "e", "input": ["a", "b", "c"]}
    status, _, pieces = await call("POST", "/v1/embeddings", payload)
    body = b"".join(pieces)
    assert status == 200
    data = orjson.loads(body)["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert all(len(d["embedding"]) == EMBED_DIMS for d in data)
    usage = from_upstream("/v1/embeddings", find_usage(body))
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (3 * PROMPT_TOKENS, 0)


async def test_health_and_unknown_paths() -> None:
    assert (await call("GET", "/healthz"))[0] == 200
    assert (await call("POST", "/v1/responses", CHAT))[0] == 404
