"""Every endpoint through the stock ``openai`` SDK, streams included, with the usage events."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from deploy.demo_upstream import count_tokens
from deploy.stack import Endpoints
from tests.gateway.harness import (
    CHAT,
    EMBED,
    FakeKeyService,
    new_key,
    usage_events,
)
from tests.served import Served


@pytest.fixture
async def sdk(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> AsyncIterator[openai.AsyncOpenAI]:
    secret, state = new_key()
    keyservice[0].add(state)
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    yield client
    await client.close()


async def test_chat_completion(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    answer = await sdk.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Say hello, gateway!"}], max_tokens=7
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 7
    assert answer.usage.prompt_tokens == count_tokens("user: Say hello, gateway!")
    assert count_tokens(answer.choices[0].message.content or "") == 7
    [event] = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert (event.input_tokens, event.output_tokens) == (answer.usage.prompt_tokens, 7)
    assert (event.model, event.endpoint, event.status_code) == (CHAT, "/v1/chat/completions", 200)
    assert event.usage_source == "upstream"
    assert not event.stream


async def test_chat_stream_without_usage_option_drops_the_usage_chunk(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    stream = await sdk.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "stream me"}], max_tokens=5, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert count_tokens(text) == 5
    [event] = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert event.stream
    assert (event.output_tokens, event.usage_source) == (5, "upstream")
    assert event.input_tokens == count_tokens("user: stream me")


async def test_chat_stream_with_include_usage(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    stream = await sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "count"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    [event] = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert event.output_tokens == 4


async def test_daft_chat_with_text_parts(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    answer = await sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": [{"type": "text", "text": "one row of data"}]}],
    )
    assert answer.choices[0].message.content
    [event] = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert event.input_tokens == count_tokens("user: one row of data")


async def test_completions_plain_and_streamed(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    answer = await sdk.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=6)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 6)
    stream = await sdk.completions.create(
        model=CHAT, prompt="Once upon a time", max_tokens=3, stream=True
    )
    pieces = [c async for c in stream]
    assert count_tokens("".join(c.choices[0].text for c in pieces if c.choices)) == 3
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2)
    assert sorted((e.stream, e.output_tokens) for e in events) == [(False, 6), (True, 3)]
    assert {e.endpoint for e in events} == {"/v1/completions"}


async def test_daft_responses_with_input_text_parts(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    daft_input: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "row 17: cats"}]}
    ]
    answer = await sdk.responses.create(model=CHAT, input=daft_input, max_output_tokens=9)
    assert count_tokens(answer.output_text) == 9
    assert answer.usage is not None
    stream = await sdk.responses.create(model=CHAT, input=daft_input, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2)
    assert {e.endpoint for e in events} == {"/v1/responses"}
    assert {e.input_tokens for e in events} == {answer.usage.input_tokens}
    assert sorted(e.output_tokens for e in events) == [9, 16]
    assert all(e.usage_source == "upstream" for e in events)


async def test_embeddings_float_and_base64(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    floats = await sdk.embeddings.create(model=EMBED, input=["a b c", "d"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [16, 16]
    assert floats.usage.prompt_tokens == 4
    raw = await sdk.embeddings.create(model=EMBED, input="a b c", encoding_format="base64")
    # The SDK decodes base64 itself when it asked for floats; asked for base64, it is a string.
    encoded: object = raw.data[0].embedding
    if isinstance(encoded, str):
        vector = list(struct.unpack("<16f", base64.b64decode(encoded)))
    else:
        assert isinstance(encoded, list)
        vector = encoded
    assert vector == pytest.approx(floats.data[0].embedding, abs=1e-6)
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2)
    assert sorted(e.input_tokens for e in events) == [3, 4]
    assert {e.output_tokens for e in events} == {0}


async def test_daft_sized_embeddings_batch(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    probe = await sdk.embeddings.create(model=EMBED, input=["probe"], encoding_format="float")
    assert len(probe.data) == 1
    inputs = [f"document number {i} about topic {i % 97}, row text" for i in range(25_000)]
    assert len(json.dumps({"input": inputs})) > 1_000_000  # Daft's ~1 MB bodies
    batch = await sdk.embeddings.create(model=EMBED, input=inputs, encoding_format="float")
    assert len(batch.data) == 25_000
    assert batch.data[-1].index == 24_999
    expected = sum(count_tokens(t) for t in inputs)
    assert batch.usage.prompt_tokens == expected
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2)
    assert max(e.input_tokens for e in events) == expected


async def test_models_list_and_retrieve(sdk: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in sdk.models.list()]
    assert CHAT in models
    assert EMBED in models
    model = await sdk.models.retrieve(CHAT)
    assert (model.id, model.object) == (CHAT, "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.models.retrieve("nobody/nothing")
    assert caught.value.code == "model_not_found"


async def test_estimated_usage_when_upstream_gives_none(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    await sdk.chat.completions.create(
        model="test/no-usage", messages=[{"role": "user", "content": "guess my size"}], max_tokens=5
    )
    stream = await sdk.chat.completions.create(
        model="test/no-usage", messages=[{"role": "user", "content": "x"}], stream=True
    )
    [c async for c in stream]
    await sdk.embeddings.create(model="test/no-usage-embed", input=["one two three"])
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 3)
    assert {e.usage_source for e in events} == {"estimated"}
    by_endpoint = {(e.endpoint, e.stream): e for e in events}
    assert by_endpoint["/v1/chat/completions", False].output_tokens == 5
    assert by_endpoint["/v1/chat/completions", False].input_tokens == 3
    assert by_endpoint["/v1/chat/completions", True].output_tokens == 16
    assert by_endpoint["/v1/embeddings", False].input_tokens == 3


async def test_upstream_failures_are_502_504_and_recorded(
    sdk: openai.AsyncOpenAI, endpoints: Endpoints, topic_prefix: str
) -> None:
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.InternalServerError) as failed:
        await sdk.chat.completions.create(model="test/error-500", messages=messages)  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert "500" in failed.value.message
    with pytest.raises(openai.APIStatusError) as slow:
        await sdk.chat.completions.create(model="test/slow", messages=messages)  # type: ignore[arg-type]
    assert slow.value.status_code == 504
    with pytest.raises(openai.InternalServerError) as dead:
        await sdk.chat.completions.create(model="test/unreachable", messages=messages)  # type: ignore[arg-type]
    assert dead.value.status_code == 502
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="test/rate-limited", messages=messages)  # type: ignore[arg-type]
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 4)
    assert sorted(e.status_code for e in events) == [429, 502, 502, 504]


async def test_lower_case_header_overhead_and_operational_endpoints(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        sent = time.perf_counter()
        answer = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"bearer {secret}"},
            json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]},
        )
        elapsed_ms = (time.perf_counter() - sent) * 1000
        assert answer.status_code == 200
        # Time in the gateway itself: some, and less than the whole call as the client saw it.
        assert 0 < float(answer.headers["x-tollgate-overhead-ms"]) < elapsed_ms
        assert answer.headers["x-request-id"]
        refused = await client.post("/v1/chat/completions", json={})
        assert "x-tollgate-overhead-ms" in refused.headers
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json()["keys_feeder_caught_up"] is True
        metrics = (await client.get("/metrics")).text
    ok = 'tollgate_gateway_requests_total{endpoint="/v1/chat/completions",status="200"}'
    assert ok in metrics
    assert 'tollgate_gateway_auth_total{result="valid",source="verify"}' in metrics
    assert "tollgate_gateway_spool_depth 0.0" in metrics
    assert secret not in metrics
