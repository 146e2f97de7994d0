"""How long a gateway trusts what it holds: while subscribed, unsubscribed, and with no source."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis.asyncio as aioredis

from services.gateway.keys.cache import LocalCache
from shared.key_store import KeyStore
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import CHAT, FakeKeyService, new_key
from tests.manual_clock import ManualClock
from tests.polling import eventually
from tests.private_servers import Private
from tests.served import Served
from tests.state_macs import sign

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


async def _status(client: httpx.AsyncClient, url: str, secret: str) -> int:
    answer = await client.post(
        url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    return answer.status_code


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.mark.unit
def test_full_trust_only_for_entries_confirmed_while_subscribed(clock: ManualClock) -> None:
    cache = LocalCache(10, 30, 1, unsubscribed_ttl_s=1, stale_max_s=300, clock=clock)
    _, state = new_key()
    cache.put(state)  # before the subscription is up: it may miss a change
    cache.covered(clock.now + 1)
    clock.now += 2
    assert cache.get(state.key_hash) is None, "confirmed before the subscription: short trust"
    cache.put(state)  # confirmed again (the same version) while subscribed
    clock.now += 29
    assert cache.get(state.key_hash) == state
    cache.covered(None)  # the subscription is lost: a change may go unseen from now on
    assert cache.get(state.key_hash) is None
    assert cache.get(state.key_hash, allow_stale=True) == state


@pytest.mark.unit
def test_a_lookup_sent_before_the_subscription_came_up_gets_short_trust(clock: ManualClock) -> None:
    cache = LocalCache(10, 30, 1, unsubscribed_ttl_s=1, clock=clock)
    _, state = new_key()
    sent = clock.now
    clock.now += 0.5
    cache.covered(clock.now)  # subscribed while the lookup was under way
    cache.put(state, sent)  # a change published in between could be missing from it
    clock.now += 2
    assert cache.get(state.key_hash) is None


@pytest.mark.unit
def test_stale_entries_are_served_for_a_bounded_time_only(clock: ManualClock) -> None:
    cache = LocalCache(10, 30, 1, unsubscribed_ttl_s=1, stale_max_s=120, clock=clock)
    _, state = new_key()
    cache.put(state)
    clock.now += 119
    assert cache.get(state.key_hash, allow_stale=True) == state
    clock.now += 2
    assert cache.get(state.key_hash, allow_stale=True) is None


async def test_a_cached_key_works_until_stale_key_max_s_then_gets_503(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_redis: Private,
) -> None:
    stale_max_s = 2.0
    gateway = await make_gateway(redis=private_redis.redis_url, stale_key_max_s=stale_max_s)
    secret, state = new_key()
    keyservice[0].add(state)
    async with httpx.AsyncClient() as client:
        before = time.monotonic()
        assert await _status(client, gateway.url, secret) == 200  # confirmed by a source
        after = time.monotonic()
        await private_redis.astop()
        await keyservice[1].stop()
        last_ok = 0.0
        while (status := await _status(client, gateway.url, secret)) == 200:
            last_ok = time.monotonic()
            assert last_ok - before < stale_max_s + 1.0, "a stale key was served too long"
            await asyncio.sleep(0.05)  # polling, bounded by the assertion above
        refused_at = time.monotonic()
    print(f"\nstale key served {last_ok - after:.2f} s after its last confirmation, then 503")
    assert status == 503
    assert last_ok - after > stale_max_s - 0.5, "served well past the short TTL, from cache"
    assert refused_at - before >= stale_max_s


async def test_with_redis_down_a_revocation_is_picked_up_from_the_key_service(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_redis: Private,
) -> None:
    # No subscription: local entries are trusted for unsubscribed_cache_ttl_s (1 s) only,
    # then the key service is asked again. Kafka carries no event here at all.
    gateway = await make_gateway(redis=private_redis.redis_url)
    secret, state = new_key()
    keyservice[0].add(state)
    async with httpx.AsyncClient() as client:
        assert await _status(client, gateway.url, secret) == 200
        await private_redis.astop()
        assert await _status(client, gateway.url, secret) == 200
        keyservice[0].add(state.model_copy(update={"status": "revoked", "version": 2}))
        revoked = time.monotonic()

        async def status() -> int:
            return await _status(client, gateway.url, secret)

        await eventually(status, until=lambda s: s == 401, timeout=1.5, what="refused")
        took = time.monotonic() - revoked
    print(f"\nwith Redis down, refused {took * 1000:.0f} ms after the key service revoked it")
    assert took < 1.5


async def test_the_subscription_comes_back_after_redis_restarts(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_redis: Private,
    redis_prefix: str,
) -> None:
    # A long unsubscribed TTL: only a pushed change can reach the gateway within a second.
    gateway = await make_gateway(redis=private_redis.redis_url, unsubscribed_cache_ttl_s=60)
    secret, state = new_key()
    keyservice[0].add(state)  # the key service keeps saying "active"
    client = aioredis.Redis.from_url(private_redis.redis_url)
    store = KeyStore(client, redis_prefix)
    try:
        async with httpx.AsyncClient() as http:
            assert await _status(http, gateway.url, secret) == 200
            await private_redis.astop()
            await private_redis.astart()

            async def subscribers() -> int:
                [(_, count)] = await client.pubsub_numsub(store.channel)
                return int(count)

            await eventually(subscribers, until=lambda n: n == 1, timeout=10, what="resubscribed")
            revoked = time.monotonic()
            await store.apply([sign(state.model_copy(update={"status": "revoked", "version": 2}))])

            async def status() -> int:
                return await _status(http, gateway.url, secret)

            await eventually(status, until=lambda s: s == 401, timeout=1.0, what="pushed")
            print(f"\nafter a Redis restart, refused {(time.monotonic() - revoked) * 1000:.0f} ms"
                  " after the write")  # fmt: skip
    finally:
        await client.aclose()
