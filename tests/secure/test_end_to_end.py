"""The whole system on the secured engines, each service with its own credentials (as
``python -m deploy.secure env SERVICE`` gives them): the openai SDK through the gateway, the
usage and costs exact at metering and billing, a revocation refused within a second; and no
credential in any log line, nor on any topic."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.secure import ADMIN_USER, SecureEngines
from shared.kafka_security import kafka_options
from tests.e2e.system import CHAT, EMBED, System
from tests.polling import eventually

pytestmark = [pytest.mark.secure, pytest.mark.slow]


async def _usage(system: System, admin: dict[str, str], project: str) -> tuple[int, int, int]:
    async with httpx.AsyncClient(base_url=system.url("metering"), headers=admin) as api:
        got = await api.get(
            f"/v1/projects/{project}/usage", params={"start_time": int(time.time()) - 3600}
        )
    rows = [row for bucket in got.json()["data"] for row in bucket["results"]]
    return (
        sum(r["num_model_requests"] for r in rows),
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
    )


async def test_the_system_on_secured_engines(
    secured_system: System,
    engines: SecureEngines,
    tmp_path: Path,
) -> None:
    system = secured_system
    admin = {"Authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "secure"})).json()["id"]
        created = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "s"})).json()

    client = openai.AsyncOpenAI(
        base_url=system.url("gateway") + "/v1", api_key=created["key"], max_retries=0
    )
    told = [0, 0, 0]
    try:
        for _ in range(3):
            chat = await client.chat.completions.create(
                model=CHAT, messages=[{"role": "user", "content": "hello"}], max_tokens=8
            )
            assert chat.usage is not None
            told = [
                told[0] + 1,
                told[1] + chat.usage.prompt_tokens,
                told[2] + chat.usage.completion_tokens,
            ]
        embedded = await client.embeddings.create(model=EMBED, input="secured")
        told = [told[0] + 1, told[1] + embedded.usage.prompt_tokens, told[2]]
        await eventually(
            lambda: _usage(system, admin, project),
            until=lambda got: list(got) == told,
            what="usage on the secured system",
            timeout=60,
        )

        async def total() -> float:
            async with httpx.AsyncClient(base_url=system.url("billing"), headers=admin) as api:
                answer = await api.get(
                    f"/v1/projects/{project}/costs/total",
                    params={"start_time": int(time.time()) - 86400},
                )
            return float(answer.json()["exact_amount"]["value"])

        # Billing applies the same events on its own (test_e2e_suite.py checks them exactly).
        await eventually(total, until=lambda spent: spent > 0, what="costs on the secured system")

        # Revoked: refused at the gateway within a second (Redis over TLS carries it).
        async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
            started = time.monotonic()
            await keys.delete(f"/v1/projects/{project}/keys/{created['id']}")
        while True:
            sent = time.monotonic()
            try:
                await client.models.list()
            except openai.AuthenticationError:
                break
            assert sent - started < 1.0, "still accepted a second after its revocation"
            await asyncio.sleep(0.02)
    finally:
        await client.close()

    # No credential in any log line of any service, metric (labels too), nor on the topics.
    secrets = [*engines.passwords.values(), created["key"], system.admin_token]
    for log in tmp_path.glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a credential in {log.name}"
    for name in ("gateway", "keys", "metering", "billing"):
        async with httpx.AsyncClient(base_url=system.url(name)) as probe:
            exposed = (await probe.get("/metrics")).text + (await probe.get("/readyz")).text
        assert exposed, name
        for secret in secrets:
            assert secret not in exposed, f"a credential in {name}'s /metrics or /readyz"
    consumer = AIOKafkaConsumer(
        "keys.events",
        "usage.events",
        "audit.events",
        **kafka_options(engines.admin_kafka()),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000, max_records=100_000)
    finally:
        await consumer.stop()
    records = b"".join(r.value or b"" for batch in batches.values() for r in batch)
    assert records, "the topics hold the run's records"
    for secret in secrets:
        assert secret.encode() not in records
    assert ADMIN_USER.encode() not in records
