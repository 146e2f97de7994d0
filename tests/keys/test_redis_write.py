"""The direct path: every committed change is in the gateways' Redis before the API answers.

And a Redis that refuses or hangs never fails, nor holds up, an API call: the outbox still
carries the change to Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from deploy.ports import free_port
from services.keys.settings import KeysSettings
from shared import apikeys
from shared.key_store import KeyStore
from tests.keys.harness import Running, by_key, read_topic, running


async def test_every_change_is_in_redis_when_the_call_returns(
    keys: Running, redis_client: aioredis.Redis
) -> None:
    store = KeyStore(redis_client, keys.settings.redis_prefix)
    project = await keys.project()
    a = await keys.key(project, "a")
    b = await keys.key(project, "b")
    base = f"/v1/projects/{project}/keys"

    async def held(key: dict[str, str], secret: str | None = None) -> tuple[object, ...]:
        state = await store.lookup(apikeys.hash_key(secret or key["key"]))
        assert state is not None
        assert state == await store.state(key["id"])
        return (state.version, state.name, state.is_default, state.status)

    assert await held(a) == (1, "a", True, "active")
    await keys.client.patch(f"{base}/{a['id']}", json={"name": "a2"})
    assert await held(a) == (2, "a2", True, "active")
    await keys.client.post(f"{base}/{b['id']}/default")
    assert await held(a) == (3, "a2", False, "active")  # both states of a default change
    assert await held(b) == (2, "b", True, "active")
    rotated = (
        await keys.client.post(f"{base}/{a['id']}/rotate", json={"grace_period_seconds": 0})
    ).json()
    assert await held(a, rotated["key"]) == (4, "a2", False, "active")
    # The old secret's hash now holds the new state, which no longer names it.
    old = await store.lookup(apikeys.hash_key(a["key"]))
    assert old is not None
    assert old.version == 4
    assert apikeys.hash_key(a["key"]) not in (old.key_hash, old.previous_key_hash)
    await keys.client.delete(f"{base}/{b['id']}")
    assert await held(b) == (3, "b", False, "revoked")
    ready = (await keys.client.get("/readyz")).json()
    assert ready["redis_states_written"] == 7
    assert ready["redis_states_failed"] == 0


@pytest.fixture
async def hung_redis() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers (a Redis that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("redis_kind", ["refusing", "hung"])
async def test_a_redis_failure_never_fails_the_call_and_the_outbox_carries_it(
    keys_settings: KeysSettings, hung_redis: str, redis_kind: str
) -> None:
    url = hung_redis if redis_kind == "hung" else f"redis://127.0.0.1:{free_port()}/0"
    settings = keys_settings.model_copy(update={"redis_url": url, "redis_timeout_s": 0.3})
    async with running(settings) as keys:
        project = await keys.project()
        started = time.monotonic()
        key = await keys.key(project)
        revoked = await keys.client.delete(f"/v1/projects/{project}/keys/{key['id']}")
        took = time.monotonic() - started
        assert revoked.status_code == 200, revoked.text
        assert took < 2 * 0.3 + 0.5, f"two calls took {took:.2f}s with Redis {redis_kind}"
        ready: dict[str, object] = (await keys.client.get("/readyz")).json()
        assert ready["redis_states_failed"] == 2
        assert ready["redis_error"] in {"ConnectionError", "TimeoutError"}
        records = await read_topic(settings.kafka_bootstrap, settings.keys_topic, 2)
    history = by_key(records)[key["id"]]
    assert [(e.type, e.version) for e in history] == [("key.created", 1), ("key.revoked", 2)]
