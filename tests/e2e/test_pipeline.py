"""End to end: keys from the key service, traffic through the gateway with the stock `openai`
SDK, and the Usage and Costs APIs agreeing exactly with what the client was told."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from shared.catalogue import load_catalogue
from tests.e2e.system import CHAT, EMBED, System
from tests.polling import eventually


class Tally:
    """What the client was told, per key and model: requests, input and output tokens."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.by_key_model: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(self, key_id: str, model: str, input_tokens: int, output_tokens: int) -> None:
        totals = self.by_key[key_id]
        totals[0] += 1
        totals[1] += input_tokens
        totals[2] += output_tokens
        self.by_key_model[key_id, model][0] += input_tokens
        self.by_key_model[key_id, model][1] += output_tokens


async def _traffic(client: openai.AsyncOpenAI, key_id: str, tally: Tally) -> None:
    for i in range(3):
        chat = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": f"question number {i}"}]
        )
        assert chat.usage is not None
        tally.add(key_id, CHAT, chat.usage.prompt_tokens, chat.usage.completion_tokens)
    stream = await client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "stream me a few words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = [chunk async for chunk in stream]
    final = streamed[-1].usage
    assert final is not None
    tally.add(key_id, CHAT, final.prompt_tokens, final.completion_tokens)
    embedded = await client.embeddings.create(
        model=EMBED, input=[f"document {i} about tolls" for i in range(50)]
    )
    assert len(embedded.data) == 50
    tally.add(key_id, EMBED, embedded.usage.prompt_tokens, 0)
    response = await client.responses.create(
        model=CHAT,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "describe a gate"}]}],
    )
    assert response.usage is not None
    tally.add(key_id, CHAT, response.usage.input_tokens, response.usage.output_tokens)


def _admin(system: System, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.url(name),
        headers={"Authorization": f"Bearer {system.admin_token}"},
        timeout=10,
    )


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_usage_and_costs_equal_what_clients_were_told(system: System) -> None:
    keys_api = _admin(system, "keys")
    project = (await keys_api.post("/v1/projects", json={"name": "e2e"})).json()["id"]
    keys = {}
    for name in ("production-app", "development"):
        created = await keys_api.post(f"/v1/projects/{project}/keys", json={"name": name})
        assert created.status_code == 201, created.text
        keys[created.json()["id"]] = created.json()["key"]

    tally = Tally()
    for key_id, secret in keys.items():
        client = openai.AsyncOpenAI(base_url=f"{system.url('gateway')}/v1", api_key=secret)
        await _traffic(client, key_id, tally)
        await client.close()

    start = int(time.time()) - 3600
    metering = _admin(system, "metering")

    async def usage_by_key() -> dict[str, list[int]]:
        got = await metering.get(
            f"/v1/projects/{project}/usage",
            params={"start_time": start, "bucket_width": "1d", "group_by": "api_key_id"},
        )
        assert got.status_code == 200, got.text
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for bucket in got.json()["data"]:
            for row in bucket["results"]:
                t = totals[row["api_key_id"]]
                t[0] += row["num_model_requests"]
                t[1] += row["input_tokens"]
                t[2] += row["output_tokens"]
        return dict(totals)

    expected = {k: list(v) for k, v in tally.by_key.items()}
    await eventually(usage_by_key, until=lambda got: got == expected, what="usage totals")

    prices = load_catalogue(
        Path(system.processes["billing"].env["TOLLGATE_BILLING_CATALOGUE_PATH"])
    )
    expected_cost: dict[str, Decimal] = defaultdict(Decimal)
    for (key_id, model), (input_tokens, output_tokens) in tally.by_key_model.items():
        entry = prices.get(model)
        assert entry is not None
        price = entry.prices[-1]
        expected_cost[key_id] += (
            input_tokens * price.input_per_million + output_tokens * price.output_per_million
        ) / Decimal(1_000_000)
    billing = _admin(system, "billing")

    async def costs_by_key() -> dict[str, Decimal]:
        got = await billing.get(
            f"/v1/projects/{project}/costs",
            params={"start_time": start - 86400, "group_by": "api_key_id"},
        )
        assert got.status_code == 200, got.text
        body: dict[str, Any] = json.loads(got.text, parse_float=Decimal)
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for bucket in body["data"]:
            for row in bucket["results"]:
                assert row["amount"]["currency"] == "usd"
                totals[row["api_key_id"]] += Decimal(row["amount"]["value"])
        return dict(totals)

    await eventually(costs_by_key, until=lambda got: got == expected_cost, what="cost totals")
    total = await billing.get(f"/v1/projects/{project}/costs/total", params={"start_time": start})
    shown = json.loads(total.text, parse_float=Decimal)["amount"]["value"]
    # A shown total is the exact sum rounded once, half-up, to the cent.
    assert shown == sum(expected_cost.values(), Decimal(0)).quantize(Decimal("0.01"), ROUND_HALF_UP)

    # last_used_at came back to the key service from usage.events.
    async def last_used() -> list[object]:
        listed = (await keys_api.get(f"/v1/projects/{project}/keys")).json()["data"]
        return [k["last_used_at"] for k in listed]

    await eventually(last_used, until=all, what="last_used_at")

    # Revoking a key stops it at the gateway within a second.
    revoked_id, revoked_secret = next(iter(keys.items()))
    assert (await keys_api.delete(f"/v1/projects/{project}/keys/{revoked_id}")).status_code == 200
    refused = openai.AsyncOpenAI(
        base_url=f"{system.url('gateway')}/v1", api_key=revoked_secret, max_retries=0
    )

    async def still_works() -> bool:
        try:
            await refused.models.list()
        except openai.AuthenticationError:
            return False
        return True

    await eventually(still_works, until=lambda ok: not ok, timeout=1.0, what="revocation")
    await refused.close()
    for api in (keys_api, metering, billing):
        await api.aclose()
