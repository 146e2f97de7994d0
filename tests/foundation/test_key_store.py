"""The shared key store on the real Redis: versions only move forward, whatever the order."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from shared.apikeys import generate, hash_key
from shared.events import KeyState
from shared.key_store import KeyStore, parse_published


def _state(**changes: object) -> KeyState:
    base = KeyState(
        key_id="key_store_test",
        project_id="proj_1",
        name="k",
        hint="sk-...abcd",
        key_hash=hash_key(generate()),
        version=1,
        created_at=datetime.now(UTC),
    )
    return base.model_copy(update=changes)


def _tag(name: str) -> str:
    found = re.search(r"\{([^}]+)\}", name)
    assert found, f"{name} has no hash tag"
    return found.group(1)


async def test_an_older_state_never_replaces_a_newer_one(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = KeyStore(redis_client, redis_prefix)
    v1 = _state()
    v2 = v1.model_copy(update={"status": "revoked", "version": 2})
    await store.apply([v2])
    await store.apply([v1])  # late: from Kafka after the key service's own write
    assert await store.state(v1.key_id) == v2
    assert await store.lookup(v1.key_hash) == v2
    await store.apply([v1, v2, v1])  # and in one batch, in any order
    assert await store.lookup(v1.key_hash) == v2


async def test_a_rotated_out_secret_never_comes_back_in_any_order(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = KeyStore(redis_client, redis_prefix)
    v1 = _state()
    now = datetime.now(UTC)
    v2 = v1.model_copy(  # rotated with a grace period: both secrets work
        update={
            "key_hash": hash_key(generate()),
            "previous_key_hash": v1.key_hash,
            "previous_valid_until": now + timedelta(hours=1),
            "version": 2,
        }
    )
    v3 = v2.model_copy(  # rotated again, no grace: only the newest secret
        update={
            "key_hash": hash_key(generate()),
            "previous_key_hash": None,
            "previous_valid_until": None,
            "version": 3,
        }
    )
    await store.apply([v3])
    await store.apply([v1])  # v1 arrives late and names a secret v3 no longer has
    await store.apply([v2])
    for secret_hash in (v1.key_hash, v2.key_hash, v3.key_hash):
        assert await store.lookup(secret_hash) == v3, "every old secret holds the newest state"
    # Hashes whose key holds a newer state not naming them are forgotten by the key.
    held = await redis_client.smembers(store.hashes_key(v1.key_id))
    assert held == {v3.key_hash.encode()}
    await store.apply([v2])  # and an old state arriving once more still changes nothing
    assert await store.lookup(v1.key_hash) == v3


async def test_every_name_has_a_hash_tag_and_a_key_s_names_share_it(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = KeyStore(redis_client, redis_prefix)
    state = _state(previous_key_hash=hash_key(generate()))
    await store.apply([state], {"topic:0": 5})
    names = [n.decode() async for n in redis_client.scan_iter(match=redis_prefix + "*")]
    assert sorted(names) == sorted(
        [
            store.state_key(state.key_id),
            store.hashes_key(state.key_id),
            store.hash_key(state.key_hash),
            store.hash_key(state.previous_key_hash or ""),
            store.offsets_key,
        ]
    )
    # The one two-key script touches the state and its hash set: one slot on a cluster.
    assert _tag(store.state_key(state.key_id)) == _tag(store.hashes_key(state.key_id))
    assert _tag(store.state_key(state.key_id)) == state.key_id
    assert _tag(store.hash_key(state.key_hash)) == state.key_hash
    assert await store.offsets() == {"topic:0": 5}


async def test_only_a_newer_state_is_published(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = KeyStore(redis_client, redis_prefix)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.channel)
    try:
        v1 = _state()
        v2 = v1.model_copy(update={"status": "revoked", "version": 2})
        await store.apply([v1])
        await store.apply([v2])
        await store.apply([v1])  # older: not published
        await store.apply([v2])  # the same again (another replica's feeder): not published
        published: list[KeyState] = []
        # Both expected messages, then a moment more in which no third one may arrive.
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                published.append(parse_published(message["data"]))
            elif len(published) >= 2:
                break
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert [s.version for s in published] == [1, 2]
    assert published[1] == v2
