"""End to end: key policies set through the key service hold at two gateways, with the stock
`openai` SDK (its RateLimitError and PermissionDeniedError), and the Costs API as the ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from deploy.stack import Endpoints
from deploy.system import replica_name
from tests.e2e.system import CHAT, EMBED, System, start_system
from tests.polling import eventually


@pytest.fixture
def two_gateways(
    endpoints: Endpoints, topic_prefix: str, unique: str, tmp_path: Path
) -> Iterator[System]:
    started = start_system(endpoints, topic_prefix, unique, tmp_path, gateways=2)
    yield started
    started.stop()


def _admin(system: System) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.url("keys"),
        headers={"Authorization": f"Bearer {system.admin_token}"},
        timeout=10,
    )


def _clients(system: System, secret: str) -> list[openai.AsyncOpenAI]:
    return [
        openai.AsyncOpenAI(
            base_url=system.url(replica_name(i)) + "/v1", api_key=secret, max_retries=0
        )
        for i in range(2)
    ]


async def _key(system: System, **policy: Any) -> tuple[str, str, str]:
    async with _admin(system) as admin:
        project = (await admin.post("/v1/projects", json={"name": "policies"})).json()["id"]
        created = await admin.post(
            f"/v1/projects/{project}/keys", json={"name": "limited", **policy}
        )
        assert created.status_code == 201, created.text
        return project, created.json()["id"], created.json()["key"]


async def _chat(client: openai.AsyncOpenAI, max_tokens: int = 20) -> Any:
    return await client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens
    )


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_a_budget_holds_over_two_gateways_by_the_costs_api(two_gateways: System) -> None:
    system = two_gateways
    limit = Decimal("0.002")
    project, _key_id, secret = await _key(
        system, budget={"limit_usd": str(limit), "period": "month"}
    )
    clients = _clients(system, secret)
    told = Decimal(0)
    price_in, price_out = Decimal("0.150"), Decimal("0.600")  # deploy/models.yaml

    async def one(i: int) -> str:
        nonlocal told
        try:
            answer = await _chat(clients[i % 2])
        except openai.RateLimitError as exc:
            return f"refused {exc.code} {exc.type}"
        usage = answer.usage
        told += (usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 10**6
        return "served"

    outcomes = await asyncio.gather(*(one(i) for i in range(200)))
    assert set(outcomes) == {"served", "refused insufficient_quota insufficient_quota"}
    assert told <= limit

    async with httpx.AsyncClient(
        base_url=system.url("billing"),
        headers={"Authorization": f"Bearer {system.admin_token}"},
        timeout=10,
    ) as billing:

        async def ledger() -> Decimal:
            answer = await billing.get(
                f"/v1/projects/{project}/costs/total",
                params={"start_time": int(time.time()) // 86400 * 86400 - 86400 * 31},
            )
            return Decimal(str(answer.json()["exact_amount"]["value"]))

        # The ledger of truth agrees with what the clients were told, within the limit.
        spent = await eventually(ledger, until=lambda v: v == told, timeout=30)
        assert spent <= limit
    async with httpx.AsyncClient(timeout=10) as plain:
        key = await plain.get(
            system.url("gateway") + "/v1/key", headers={"Authorization": f"Bearer {secret}"}
        )
    budget = key.json()["budget"]
    assert Decimal(budget["spent_usd"]) >= spent
    assert Decimal(budget["remaining_usd"]) <= limit - spent
    for client in clients:
        await client.close()


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_patches_take_effect_at_both_gateways_within_a_second(
    two_gateways: System,
) -> None:
    system = two_gateways
    project, key_id, secret = await _key(system, rate_limits={"requests_per_minute": 1000})
    clients = _clients(system, secret)
    for client in clients:
        await _chat(client, 1)
    async with _admin(system) as admin:
        patched = await admin.patch(
            f"/v1/projects/{project}/keys/{key_id}", json={"allowed_models": [EMBED]}
        )
        assert patched.status_code == 200, patched.text
        changed = time.monotonic()
        for client in clients:
            code = None
            while code is None:
                try:
                    await _chat(client, 1)
                except openai.PermissionDeniedError as exc:
                    code = exc.code
                assert time.monotonic() - changed < 1.0, "the key change took over a second"
            assert code == "model_not_allowed"
        # A project's limit reaches its keys the same way.
        patched = await admin.patch(
            f"/v1/projects/{project}", json={"rate_limits": {"requests_per_minute": 1}}
        )
        assert patched.status_code == 200, patched.text
        changed = time.monotonic()
        embed = [c.embeddings.create(model=EMBED, input="hi") for c in clients for _ in range(2)]
        while True:
            results = await asyncio.gather(*embed, return_exceptions=True)
            if any(isinstance(r, openai.RateLimitError) for r in results):
                refused = next(r for r in results if isinstance(r, openai.RateLimitError))
                assert refused.code == "rate_limit_exceeded"
                assert "of this project" in refused.message
                break
            assert time.monotonic() - changed < 1.0, "the project change took over a second"
            embed = [c.embeddings.create(model=EMBED, input="hi") for c in clients]
    for client in clients:
        await client.close()
