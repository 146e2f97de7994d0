"""Admin key checks across replicas: cached per process (no database round trip on the warm
path), and a revocation or rotation on one replica refused by another within a second, by the
change's NOTIFY; with the listener gone, nothing is cached (every check reads the database)."""

from __future__ import annotations

import asyncio
import time

import pytest

from deploy.ports import free_port
from services.keys.settings import KeysSettings
from tests.keys.harness import Running, bearer, running
from tests.polling import eventually


async def _refused_within(replica: Running, secret: str, since: float) -> float:
    while True:
        answer = await replica.client.get("/v1/projects", headers=bearer(secret))
        if answer.status_code == 401:
            return time.monotonic() - since
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - since < 1.0, "still accepted a second after the change"
        await asyncio.sleep(0.01)


async def _listening(replica: Running) -> bool:
    return bool(replica.app.state.admin_keys.listening)


@pytest.mark.parametrize("kafka", ["up", "down"])
async def test_revocation_and_rotation_reach_another_replica_within_a_second(
    keys_settings: KeysSettings, kafka: str
) -> None:
    # A TTL far longer than the bound: only the NOTIFY can make it this fast. Kafka is not on
    # the path: with no broker at all (nothing listens on that port) it is just as fast.
    update: dict[str, object] = {"admin_key_cache_ttl_s": 60.0}
    if kafka == "down":
        update["kafka_bootstrap"] = f"127.0.0.1:{free_port()}"
    settings = keys_settings.model_copy(update=update)
    async with running(settings) as first, running(settings) as second:
        await eventually(lambda: _listening(second), what="the second replica listens")
        revoked = await first.admin_key(["projects:read"])
        rotated = await first.admin_key(["projects:read"])
        cache = second.app.state.admin_keys
        for secret in (revoked["value"], rotated["value"]):
            for _ in range(5):  # warm: one database read, then hits
                answer = await second.client.get("/v1/projects", headers=bearer(secret))
                assert answer.status_code == 200
        assert cache.misses == 2
        assert cache.hits == 8

        started = time.monotonic()
        assert (
            await first.client.delete(f"/v1/organization/admin_api_keys/{revoked['id']}")
        ).is_success
        took = await _refused_within(second, revoked["value"], started)

        started = time.monotonic()
        answer = await first.client.post(f"/v1/organization/admin_api_keys/{rotated['id']}/rotate")
        new_secret = answer.json()["value"]
        took_rotation = await _refused_within(second, rotated["value"], started)
        fresh = await second.client.get("/v1/projects", headers=bearer(new_secret))
        assert fresh.status_code == 200
        assert cache.invalidations >= 2
        assert max(took, took_rotation) < 1.0


async def test_without_its_listener_a_replica_caches_nothing(keys: Running) -> None:
    cache = keys.app.state.admin_keys
    await eventually(lambda: _listening(keys), what="listening")
    admin = await keys.admin_key(["projects:read"])
    await cache.stop()  # as when its connection is lost: notifications could be missed
    assert cache.listening is False
    misses = cache.misses
    for _ in range(3):
        assert (await keys.client.get("/v1/projects", headers=bearer(admin["value"]))).is_success
    assert cache.misses == misses + 3, "every check read the database"
    # Revoked meanwhile (the notification goes nowhere): refused on the very next call.
    await keys.client.delete(f"/v1/organization/admin_api_keys/{admin['id']}")
    answer = await keys.client.get("/v1/projects", headers=bearer(admin["value"]))
    assert answer.status_code == 401
    cache.start()
    await eventually(lambda: _listening(keys), what="listening again")
    ready = (await keys.client.get("/readyz")).json()
    assert ready["admin_key_cache_listening"] is True
    assert ready["workers"]["keys-admin-key-listener"]["running"] is True


async def test_the_ttl_bounds_a_lost_notification(keys_settings: KeysSettings) -> None:
    settings = keys_settings.model_copy(update={"admin_key_cache_ttl_s": 0.3})
    async with running(settings) as keys:
        cache = keys.app.state.admin_keys
        await eventually(lambda: _listening(keys), what="listening")
        admin = await keys.admin_key(["projects:read"])
        assert (await keys.client.get("/v1/projects", headers=bearer(admin["value"]))).is_success
        # Revoked behind the service's back (a hand-made change that NOTIFYs nobody).
        await keys.app.state.pool.execute(
            "UPDATE admin_api_keys SET status = 'revoked' WHERE id = $1", admin["id"]
        )
        still = await keys.client.get("/v1/projects", headers=bearer(admin["value"]))
        assert still.status_code == 200, "served from the cache until its TTL"
        started = time.monotonic()
        await _refused_within(keys, admin["value"], started)
        assert cache.hits >= 1
