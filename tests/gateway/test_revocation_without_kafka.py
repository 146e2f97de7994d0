"""Revocation without Kafka: the key service writes Redis, Redis tells every gateway at once.

The real key service and two gateways share the real Redis; Kafka is a private node that the
test stops. Without the direct write and the subscription, a revoked key keeps working for
the gateways' 30 s cache TTL (and forever in Redis) while Kafka is down.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from deploy.stack import Endpoints
from services.keys.main import create_app as create_keys
from shared.apikeys import hash_key
from shared.kafka import ensure_topics
from shared.key_store import KeyStore
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import CHAT, INTERNAL_TOKEN, publish_key
from tests.keys.harness import AUTH, make_settings
from tests.polling import eventually
from tests.private_servers import Private
from tests.served import Served

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


async def _status(client: httpx.AsyncClient, url: str, secret: str) -> int:
    answer = await client.post(
        url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    return answer.status_code


async def _key_events(client: httpx.AsyncClient, url: str) -> float:
    text = (await client.get(url + "/metrics")).text
    found = re.search(r"^tollgate_gateway_key_events_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@asynccontextmanager
async def _key_service(
    *, kafka: str, endpoints: Endpoints, schema: str, prefix: str, redis_prefix: str
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    settings = make_settings(
        kafka=kafka,
        database_url=endpoints.database_url,
        schema=schema,
        prefix=prefix,
        group=f"keys-{schema}",
        redis_url=endpoints.redis_url,
        redis_prefix=redis_prefix,
        log_json=False,
    ).model_copy(update={"internal_token": SecretStr(INTERNAL_TOKEN)})  # the gateways' token
    served = await Served(create_keys(settings)).start()
    try:
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=10) as admin:
            yield served.url, admin
    finally:
        await served.stop()


async def _new_key(admin: httpx.AsyncClient, project: str) -> tuple[str, str]:
    answer = await admin.post(f"/v1/projects/{project}/keys", json={"name": "k"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["key"]


async def _refused_everywhere(
    client: httpx.AsyncClient, urls: list[str], secret: str, started: float
) -> float:
    """Seconds from started until every gateway refuses secret (fails past 1 s)."""

    async def one(url: str) -> float:
        while await _status(client, url, secret) != 401:
            assert time.monotonic() - started < 1.0, "revocation took over a second"
            await asyncio.sleep(0.005)
        return time.monotonic() - started

    return max(await asyncio.gather(*(one(u) for u in urls)))


async def test_revocation_reaches_both_gateways_within_a_second_with_kafka_down(
    *,
    make_gateway: StartGateway,
    private_kafka: Private,
    endpoints: Endpoints,
    pg_schema: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    bootstrap = private_kafka.kafka_bootstrap
    await ensure_topics(bootstrap, prefix=topic_prefix)
    async with _key_service(
        kafka=bootstrap,
        endpoints=endpoints,
        schema=pg_schema,
        prefix=topic_prefix,
        redis_prefix=redis_prefix,
    ) as (keys_url, admin):
        gateways = [(await make_gateway(kafka=bootstrap, keys_url=keys_url)).url for _ in range(2)]
        project = (await admin.post("/v1/projects", json={"name": "p"})).json()["id"]
        first_id, first = await _new_key(admin, project)
        async with httpx.AsyncClient(timeout=10) as client:
            for url in gateways:
                assert await _status(client, url, first) == 200
            await private_kafka.astop()

            # 1. Revoked while Kafka is down: refused by both gateways within a second.
            started = time.monotonic()
            answer = await admin.delete(f"/v1/projects/{project}/keys/{first_id}")
            answered = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            took = await _refused_everywhere(client, gateways, first, started)
            print(f"\nrevocation with Kafka down: API answered in {answered * 1000:.1f} ms, "
                  f"both gateways refused {took * 1000:.1f} ms after the call began")  # fmt: skip

            # 2. A key created and revoked while Kafka is down: the direct path alone.
            second_id, second = await _new_key(admin, project)
            for url in gateways:
                assert await _status(client, url, second) == 200
            started = time.monotonic()
            assert (await admin.delete(f"/v1/projects/{project}/keys/{second_id}")).is_success
            took = await _refused_everywhere(client, gateways, second, started)
            print(f"created and revoked without Kafka: refused after {took * 1000:.1f} ms")

            # 3. Kafka comes back: the outbox delivers every version, the older ones after
            # the direct writes, and a late stale event on top. None brings a key back.
            refusals: list[int] = []
            done = asyncio.Event()

            async def keep_trying() -> None:
                while not done.is_set():
                    refusals.extend(
                        [await _status(client, u, s) for u in gateways for s in (first, second)]
                    )
                    await asyncio.sleep(0.01)

            trying = asyncio.create_task(keep_trying())
            await private_kafka.astart()
            store = KeyStore(redis_client, redis_prefix)
            created = await store.state(first_id)
            assert created is not None
            v1 = created.model_copy(update={"status": "active", "version": 1})
            await publish_key(bootstrap, topic_prefix, v1, "key.updated")  # stale, late
            for url in gateways:
                # key 1 revoked, key 2 created and revoked, and the stale event: 4 more.
                await eventually(
                    lambda url=url: _key_events(client, url),  # type: ignore[misc]
                    until=lambda n: n >= 5,
                    timeout=60,
                    what="the feeder read every key event",
                )
            done.set()
            await trying
            assert set(refusals) == {401}, "a revoked key worked again"
            for key_id, secret in ((first_id, first), (second_id, second)):
                held = await store.lookup(hash_key(secret))
                assert held is not None
                assert (held.key_id, held.status, held.version) == (key_id, "revoked", 2)
            late = await make_gateway(kafka=bootstrap, keys_url=keys_url)  # replays the topic
            for secret in (first, second):
                assert await _status(client, late.url, secret) == 401
