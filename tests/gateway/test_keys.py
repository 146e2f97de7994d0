"""The key path: events feed every replica, versions only move forward, caches recover."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from deploy.stack import Endpoints
from services.gateway.keys.cache import LocalCache, RedisStore
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import CHAT, FakeKeyService, new_key, publish_key
from tests.polling import eventually
from tests.served import Served

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


async def _status(client: httpx.AsyncClient, url: str, secret: str) -> int:
    answer = await client.post(
        url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    return answer.status_code


async def test_key_works_the_moment_it_was_created(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    # The key service answers verify as soon as its create call returned, before any event.
    secret, state = new_key()
    keyservice[0].add(state)
    async with httpx.AsyncClient() as client:
        assert await _status(client, gateway.url, secret) == 200


async def test_revocation_reaches_two_replicas_within_a_second(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)  # the key service keeps saying "active": only the event revokes
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, state)
    replicas = [await make_gateway(), await make_gateway()]
    async with httpx.AsyncClient() as client:
        for replica in replicas:
            assert await _status(client, replica.url, secret) == 200
        revoked = state.model_copy(update={"status": "revoked", "version": 2})
        published = time.monotonic()
        await publish_key(endpoints.kafka_bootstrap, topic_prefix, revoked, "key.revoked")

        async def refused_after(replica: Served) -> float:
            while await _status(client, replica.url, secret) != 401:
                assert time.monotonic() - published < 1.0, "revocation took over a second"
                await asyncio.sleep(0.01)
            return time.monotonic() - published

        delays = await asyncio.gather(*(refused_after(r) for r in replicas))
    assert max(delays) < 1.0, delays


async def test_an_older_event_never_overwrites_a_newer_state(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    secret, state = new_key(version=1)
    keyservice[0].add(state)  # a stale verify answer, too
    running = await make_gateway()
    revoked = state.model_copy(update={"status": "revoked", "version": 2})
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, revoked, "key.revoked")
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, state, "key.updated")  # late
    store = RedisStore(redis_client, redis_prefix)

    async def in_redis() -> int:
        found = await store.lookup(state.key_hash)
        return found.version if found else 0

    await eventually(in_redis, until=lambda v: v == 2, what="v2 in Redis")
    restarted = await make_gateway()  # replays both events from the topic
    async with httpx.AsyncClient() as client:
        for replica in (running, restarted):
            assert await _status(client, replica.url, secret) == 401
    held = await store.lookup(state.key_hash)
    assert held is not None
    assert (held.version, held.status) == (2, "revoked")
    await store.apply([state])  # an in-flight write of the old state loses, too
    held = await store.lookup(state.key_hash)
    assert held is not None
    assert held.version == 2


@pytest.mark.unit
def test_local_cache_keeps_the_newest_version_even_after_eviction() -> None:
    cache = LocalCache(size=1, ttl_s=60, negative_ttl_s=1)
    _, v1 = new_key()
    v2 = v1.model_copy(update={"status": "revoked", "version": 2})
    assert cache.put(v2) == v2
    assert cache.put(v1) == v2
    assert cache.get(v1.key_hash) == v2
    _, other = new_key()
    cache.put(other)  # evicts v2's state; its version is still remembered
    assert cache.get(v1.key_hash) is None
    assert cache.put(v1) is None, "an old state is never taken for the newest one"


async def test_negative_cache_is_cleared_by_key_created(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    gateway = await make_gateway(negative_cache_ttl_s=300)
    secret, state = new_key()
    async with httpx.AsyncClient() as client:
        assert await _status(client, gateway.url, secret) == 401  # unknown: remembered
        await publish_key(endpoints.kafka_bootstrap, topic_prefix, state, "key.created")

        async def status() -> int:
            return await _status(client, gateway.url, secret)

        await eventually(status, until=lambda s: s == 200, timeout=5, what="key usable")
    assert keyservice[0].calls == 1


async def test_rotation_grace_expiry_and_revoked_verify_answers(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    old_secret, old = new_key()
    new_secret, rotated = new_key()
    now = datetime.now(UTC)
    in_grace = rotated.model_copy(
        update={
            "key_id": old.key_id,
            "previous_key_hash": old.key_hash,
            "previous_valid_until": now + timedelta(hours=1),
            "version": 2,
        }
    )
    keyservice[0].add(in_grace)
    past_grace_old, past_grace = new_key()
    _, past_new = new_key()
    keyservice[0].add(
        past_grace.model_copy(
            update={
                "key_hash": past_new.key_hash,
                "previous_key_hash": past_grace.key_hash,
                "previous_valid_until": now - timedelta(seconds=1),
            }
        )
    )
    expired_secret, expired = new_key(expires_at=now - timedelta(minutes=1))
    keyservice[0].add(expired)
    revoked_secret, revoked = new_key(status="revoked")
    keyservice[0].add(revoked)
    async with httpx.AsyncClient() as client:
        assert await _status(client, gateway.url, new_secret) == 200
        assert await _status(client, gateway.url, old_secret) == 200
        assert await _status(client, gateway.url, past_grace_old) == 401
        assert await _status(client, gateway.url, expired_secret) == 401
        assert await _status(client, gateway.url, revoked_secret) == 401


async def test_redis_is_rebuilt_from_the_compacted_topic_when_empty(
    make_gateway: StartGateway,
    endpoints: Endpoints,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    states = [new_key()[1] for _ in range(5)]
    for state in states:
        await publish_key(endpoints.kafka_bootstrap, topic_prefix, state)
    store = RedisStore(redis_client, redis_prefix)

    async def held() -> int:
        return sum([await store.lookup(s.key_hash) is not None for s in states])

    await make_gateway()
    await eventually(held, until=lambda n: n == 5, what="Redis filled from the topic")
    async for key in redis_client.scan_iter(match=redis_prefix + "*"):
        await redis_client.delete(key)  # as after a Redis restart without its data
    assert await held() == 0
    await eventually(held, until=lambda n: n == 5, timeout=10, what="Redis rebuilt")
