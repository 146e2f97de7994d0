"""Every key state the key service makes is signed (shared/state_mac.py): on keys.events, in
the gateways' Redis and in the verify answer, with datetimes and decimals that survive each
trip; at start it re-signs every key when its signing entry changed (upgrade, rotation)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from pydantic import SecretStr

from services.keys.settings import KeysSettings
from shared import apikeys
from shared.events import KeyState
from shared.key_store import KeyStore
from shared.state_mac import Keyring
from tests.keys.harness import Running, by_key, read_topic, running
from tests.state_macs import KEYRING, STATE_MAC_KEYS

POLICY = {
    "budget": {"limit_usd": "25.10", "period": "month"},
    "rate_limits": {"requests_per_minute": 600},
    "expires_at": 4102444800,  # 2100-01-01, a datetime on every trip
}


async def test_states_are_signed_on_kafka_redis_and_verify(
    keys: Running, redis_client: aioredis.Redis
) -> None:
    project = await keys.project()
    created = await keys.key(project, "signed", **POLICY)
    await keys.client.patch(
        f"/v1/projects/{project}", json={"budget": {"limit_usd": "0.000001", "period": "day"}}
    )
    rotated = await keys.client.post(
        f"/v1/projects/{project}/keys/{created['id']}/rotate", json={"grace_period_seconds": 60}
    )
    assert rotated.status_code == 200
    secret = rotated.json()["key"]
    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 3)
    events = by_key(records)[created["id"]]
    assert [e.version for e in events] == [1, 2, 3]
    for event in events:
        assert KEYRING.verify(event), f"version {event.version} on keys.events is not signed"
    newest = events[-1].state()
    assert newest.previous_valid_until is not None  # a datetime with microseconds
    store = KeyStore(redis_client, keys.settings.redis_prefix)
    in_redis = await store.lookup(apikeys.hash_key(secret))
    assert in_redis == newest
    assert KEYRING.verify(in_redis)
    answer = await keys.verify(apikeys.hash_key(created["key"]))  # the old secret, in grace
    assert answer.status_code == 200
    verified = KeyState.model_validate(answer.json())
    assert verified == newest
    assert KEYRING.verify(verified)
    other = Keyring.parse(SecretStr("test1:another-secret-of-the-same-id-0"), "other")
    assert not other.verify(verified), "the MAC depends on the secret, not only on the id"


async def _states(
    redis_client: aioredis.Redis, settings: KeysSettings, ids: list[str]
) -> list[KeyState]:
    store = KeyStore(redis_client, settings.redis_prefix)
    found = [await store.state(key_id) for key_id in ids]
    assert all(s is not None for s in found)
    return [s for s in found if s is not None]


async def test_start_resigns_every_key_after_an_upgrade_and_a_rotation(
    keys_settings: KeysSettings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    async with running(keys_settings) as keys:
        project = await keys.project()
        active = await keys.key(project, "active")
        revoked = await keys.key(project, "revoked")
        gone = await keys.client.delete(f"/v1/projects/{project}/keys/{revoked['id']}")
        assert gone.status_code == 200
    ids = [active["id"], revoked["id"]]
    # As a version before MACs left things: unsigned states, and no signer recorded.
    store = KeyStore(redis_client, keys_settings.redis_prefix)
    unsigned = [
        s.model_copy(update={"mac": None}) for s in await _states(redis_client, keys_settings, ids)
    ]
    await redis_client.delete(*(store.state_key(i) for i in ids))
    await store.apply(unsigned)
    await db.execute("DELETE FROM state_signer")
    async with running(keys_settings):
        after_upgrade = await _states(redis_client, keys_settings, ids)
    assert [s.version for s in after_upgrade] == [s.version + 1 for s in unsigned]
    assert all(KEYRING.verify(s) for s in after_upgrade)
    assert after_upgrade[1].status == "revoked"
    async with running(keys_settings):  # the same signer: nothing to do
        assert await _states(redis_client, keys_settings, ids) == after_upgrade
    # A rotation: the new entry signs, the old one still verifies until it is removed.
    rotated = f"next2:the-next-state-mac-secret-0123456789,{STATE_MAC_KEYS}"
    settings = keys_settings.model_copy(update={"state_mac_keys": SecretStr(rotated)})
    async with running(settings):
        after_rotation = await _states(redis_client, keys_settings, ids)
        # The outbox's relay runs while the service does.
        records = await read_topic(keys_settings.kafka_bootstrap, keys_settings.keys_topic, 7)
    assert [s.version for s in after_rotation] == [s.version + 1 for s in after_upgrade]
    assert all(s.mac is not None and s.mac.startswith("next2:") for s in after_rotation)
    new_only = Keyring.parse(SecretStr(rotated.partition(",")[0]), "new")
    assert all(new_only.verify(s) for s in after_rotation)
    newest = {key_id: events[-1] for key_id, events in by_key(records).items()}
    assert all(new_only.verify(newest[i]) for i in ids), "the topic's newest states re-signed"
    assert await db.fetchval("SELECT key_id FROM state_signer") == "next2"
