"""Outages: Redis, the key service, both; Kafka with the spool; clients leaving; load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from deploy.stack import Endpoints
from services.gateway.keys.cache import RedisStore
from shared.kafka import ensure_topics
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import (
    CHAT,
    FakeKeyService,
    new_key,
    upstream_requests,
    usage_events,
)
from tests.polling import eventually
from tests.private_servers import Private
from tests.served import Served

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def _call(client: httpx.AsyncClient, url: str, secret: str) -> httpx.Response:
    return await client.post(
        url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
    )


async def test_redis_down_then_both_down(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_redis: Private,
    upstream: Served,
) -> None:
    gateway = await make_gateway(redis=private_redis.redis_url)
    used_secret, used = new_key()
    fresh_secret, fresh = new_key()
    unseen_secret, unseen = new_key()
    for state in (used, fresh, unseen):
        keyservice[0].add(state)
    async with httpx.AsyncClient() as client:
        assert (await _call(client, gateway.url, used_secret)).status_code == 200
        await private_redis.astop()
        # Redis down: the in-process cache and the verify endpoint keep keys working.
        assert (await _call(client, gateway.url, used_secret)).status_code == 200
        assert (await _call(client, gateway.url, fresh_secret)).status_code == 200
        # And the key service too: a key this replica never saw cannot be checked.
        await keyservice[1].stop()
        before = await upstream_requests(upstream.url)
        refused = await _call(client, gateway.url, unseen_secret)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "server_error"
        assert "could not be checked" in refused.json()["error"]["message"]
        assert await upstream_requests(upstream.url) == before, "nothing reached the upstream"
        # What was already checked keeps working from the in-process cache.
        assert (await _call(client, gateway.url, used_secret)).status_code == 200
        await private_redis.astart()
        await keyservice[1].start()

        async def status() -> int:
            return (await _call(client, gateway.url, unseen_secret)).status_code

        await eventually(status, until=lambda s: s == 200, timeout=10, what="recovery")


async def test_key_service_down_redis_keeps_keys_working(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    redis_client: aioredis.Redis,
    redis_prefix: str,
    upstream: Served,
) -> None:
    gateway = await make_gateway()
    secret, state = new_key()
    await RedisStore(redis_client, redis_prefix).apply([state])  # as another replica did
    unknown_secret, _ = new_key()
    await keyservice[1].stop()
    async with httpx.AsyncClient() as client:
        assert (await _call(client, gateway.url, secret)).status_code == 200
        before = await upstream_requests(upstream.url)
        # Not in Redis and no key service to ask: it may have been created a moment ago,
        # so the answer is 503 (retry), not 401, and nothing reaches the upstream.
        assert (await _call(client, gateway.url, unknown_secret)).status_code == 503
        assert await upstream_requests(upstream.url) == before
    assert keyservice[0].calls == 0


@pytest.mark.slow
async def test_kafka_outage_spools_and_loses_no_usage_event(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_kafka: Private,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    bootstrap = private_kafka.kafka_bootstrap
    await ensure_topics(bootstrap, prefix=topic_prefix)
    gateway = await make_gateway(
        kafka=bootstrap, spool=tmp_path / "spool", kafka_delivery_timeout_s=2.0
    )
    secret, state = new_key()
    keyservice[0].add(state)
    request_ids: list[str] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                answer = await _call(client, gateway.url, secret)
                assert answer.status_code == 200
                # A slow Kafka never slows a response.
                assert answer.elapsed.total_seconds() < 1.0
                request_ids.append(answer.headers["x-request-id"])
                await asyncio.sleep(0.02)

    async def spool_depth() -> int:
        async with httpx.AsyncClient() as client:
            return int((await client.get(gateway.url + "/readyz")).json()["spool_depth"])

    sender = asyncio.create_task(traffic())
    await eventually(lambda: asyncio.sleep(0, len(request_ids)), until=lambda n: n >= 10)
    await private_kafka.astop()
    await eventually(spool_depth, until=lambda d: d >= 10, timeout=30, what="events spooled")
    spooled_files = list((tmp_path / "spool").glob("*.jsonl"))
    assert spooled_files
    await private_kafka.astart()
    await asyncio.sleep(0.5)
    stop.set()
    await sender
    await eventually(spool_depth, until=lambda d: d == 0, timeout=60, what="spool replayed")
    events = await usage_events(bootstrap, topic_prefix, len(request_ids), timeout=30)
    assert {e.request_id for e in events} == set(request_ids)
    assert not list((tmp_path / "spool").glob("*.jsonl"))


async def test_client_leaving_mid_stream_still_yields_a_usage_event(
    gateway: Served,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    body = {**BODY, "model": "test/slow-stream", "max_tokens": 30, "stream": True}
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
        ) as answer,
    ):
        assert answer.status_code == 200
        received = 0
        async for chunk in answer.aiter_raw():
            received += chunk.count(b"data:")
            if received >= 4:
                break  # the client goes away
    [event] = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert event.stream
    assert event.usage_source == "estimated"
    assert 3 <= event.output_tokens < 30
    assert event.input_tokens == 1


async def test_a_thousand_concurrent_requests_from_one_client(
    gateway: Served,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    daft_input = [{"role": "user", "content": [{"type": "input_text", "text": "row"}]}]
    try:
        answers = await asyncio.gather(
            *(
                sdk.responses.create(model=CHAT, input=daft_input, max_output_tokens=2)  # type: ignore[arg-type]
                for _ in range(1000)
            )
        )
    finally:
        await sdk.close()
    assert len(answers) == 1000
    assert all(a.status == "completed" for a in answers)
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1000, timeout=60)
    assert len(events) == 1000
    assert {e.status_code for e in events} == {200}
