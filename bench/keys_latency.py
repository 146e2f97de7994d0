"""Key service benchmark: API latencies, change-to-event latency, and outbox drain rate.

    uv run --frozen python bench/keys_latency.py [--keys 300] [--changes 100] [--drain 2000]

Runs the key service in-process (real lifespan: migrations, relay, consumer) over
httpx.ASGITransport on the running local stack (deploy.stack), with a schema and topic
prefix of its own that are dropped afterwards. Reports:
1. create-key and verify latencies (p50/p99);
2. change-to-event latency: from a rename/revoke answer to its event read from keys.events
   by a consumer already subscribed (what bounds revocation reaching the gateways);
3. outbox drain: rows/s the relay publishes after a backlog piled up with the relay stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from pydantic import SecretStr

from deploy.stack import Stack
from services.keys import repository
from services.keys.main import create_app
from services.keys.settings import KeysSettings
from shared import apikeys
from shared.events import KeyEvent
from shared.state_mac import new_keyring_text

ADMIN, INTERNAL = "bench-admin-token-0123456789", "bench-internal-token-0123456789"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(name: str, values: list[float]) -> None:
    print(
        f"{name:28} n={len(values):5}  p50={pct(values, 0.5):7.2f} ms"
        f"  p99={pct(values, 0.99):7.2f} ms  max={max(values) * 1000:7.2f} ms"
    )


async def main(n_keys: int, n_changes: int, n_drain: int) -> None:
    endpoints = Stack().endpoints()
    tag = uuid.uuid4().hex[:8]
    settings = KeysSettings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=SecretStr(endpoints.database_url),
        admin_token=SecretStr(ADMIN),
        internal_token=SecretStr(INTERNAL),
        state_mac_keys=SecretStr(new_keyring_text()),
        db_schema=f"bench_keys_{tag}",
        topic_prefix=f"bench-{tag}.",
        consumer_group=f"bench-keys-{tag}",
        log_level="WARNING",
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://keys",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as client:
                await run(app, client, settings, n_keys, n_changes, n_drain)
    finally:
        conn = await asyncpg.connect(endpoints.database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
        await admin.start()
        ours = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        await admin.delete_topics(ours)
        await admin.close()


async def run(  # noqa: PLR0917
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: KeysSettings,
    n_keys: int,
    n_changes: int,
    n_drain: int,
) -> None:
    project = (await client.post("/v1/projects", json={"name": "bench"})).json()["id"]
    base = f"/v1/projects/{project}/keys"
    creates, secrets = [], []
    for i in range(n_keys):
        started = time.perf_counter()
        answer = await client.post(base, json={"name": f"k{i}"})
        creates.append(time.perf_counter() - started)
        secrets.append(answer.json())
    report("create key", creates)

    verifies = []
    for key in secrets * 2:
        started = time.perf_counter()
        await client.post(
            "/internal/v1/keys/verify",
            json={"key_hash": apikeys.hash_key(key["key"])},
            headers={"Authorization": f"Bearer {INTERNAL}"},
        )
        verifies.append(time.perf_counter() - started)
    report("verify", verifies)

    consumer = AIOKafkaConsumer(
        settings.keys_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    lags = []
    for i in range(n_changes):
        key = secrets[i % len(secrets)]
        if i < n_changes // 2:
            answer = await client.patch(f"{base}/{key['id']}", json={"name": f"r{i}"})
        else:
            answer = await client.delete(f"{base}/{key['id']}")
        answered = time.perf_counter()
        version = answer.status_code
        assert version in (200,), answer.text
        while True:
            record = await consumer.getone()
            event = KeyEvent.model_validate_json(record.value)
            if event.key_id == key["id"]:
                lags.append(time.perf_counter() - answered)
                break
    await consumer.stop()
    report("change -> event on topic", lags)

    relay = app.state.relay
    await relay.stop()
    for i in range(n_drain):
        await client.patch(f"{base}/{secrets[-1 - i % 50]['id']}", json={"name": f"d{i}"})
    pool = app.state.pool
    backlog = await repository.outbox_backlog(pool)
    started = time.perf_counter()
    relay.start()
    while await repository.outbox_backlog(pool):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    print(f"{'outbox drain':28} n={backlog:5}  {backlog / took:9.0f} events/s ({took:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--drain", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.changes, args.drain))
