"""The Costs API on a real ledger: exact amounts, line items, the rounded total, auth, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.billing.main import create_app
from tests.metering.harness import AUTH, CHAT, EMBED, PRICE_CHANGE, running, usage
from tests.metering.ledgers import Case
from tests.polling import eventually

DAY = datetime(2026, 3, 2, tzinfo=UTC)
D0 = int(DAY.timestamp())
EVENTS = [
    # 1,250,000 x 0.020 / 1e6 = 0.025 exactly: shown as 0.03 (half-up), not 0.02.
    usage(
        key="key_1",
        model=EMBED,
        at=DAY + timedelta(hours=1),
        input_tokens=1_250_000,
        output_tokens=0,
    ),
    usage(
        key="key_2", at=DAY + timedelta(hours=2), input_tokens=1000, cached=400, output_tokens=10
    ),
    usage(key="key_2", at=PRICE_CHANGE, input_tokens=1000, cached=400, output_tokens=10),
    usage(key="key_2", at=DAY + timedelta(days=1), input_tokens=1_000_000, output_tokens=0),
]


@pytest.fixture
async def api(case: Case) -> AsyncIterator[httpx.AsyncClient]:
    _, settings = case.settings()
    await case.produce(EVENTS)
    async with running(create_app(settings)) as client:
        await eventually(
            lambda: client.get("/readyz"),
            until=lambda r: r.json().get("applied") == len(EVENTS),
            what="events applied",
        )
        yield client


async def get(client: httpx.AsyncClient, path: str = "costs", **params: Any) -> Any:
    r = await client.get(f"/v1/projects/proj_a/{path}", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    return json.loads(r.text, parse_float=Decimal)


async def test_costs_per_day_key_and_line_item_are_exact(api: httpx.AsyncClient) -> None:
    page = await get(api, start_time=D0, end_time=D0 + 2 * 86400, group_by="api_key_id,line_item")
    assert page["object"] == "page"
    assert not page["has_more"]
    first, second = page["data"]
    assert (first["start_time"], first["end_time"]) == (D0, D0 + 86400)
    got = {(x["api_key_id"], x["line_item"]): x["amount"]["value"] for x in first["results"]}
    assert got == {
        ("key_1", f"{EMBED}, input"): Decimal("0.025"),
        # 600 x 0.150 + 600 x 0.2 (after the price change), per million
        ("key_2", f"{CHAT}, input"): Decimal("0.00021"),
        # 400 x 0.075 + 400 x 0.2 (no cached price from the change: the input price)
        ("key_2", f"{CHAT}, cached input"): Decimal("0.00011"),
        ("key_2", f"{CHAT}, output"): Decimal("0.000014"),
    }
    result = first["results"][0]
    assert result["object"] == "organization.costs.result"
    assert result["amount"]["currency"] == "usd"
    assert result["project_id"] == "proj_a"
    assert [x["amount"]["value"] for x in second["results"]] == [Decimal("0.2")]


async def test_total_is_summed_exactly_then_rounded_half_up(api: httpx.AsyncClient) -> None:
    total = await get(api, "costs/total", start_time=D0, end_time=D0 + 86400, api_key_ids="key_1")
    assert total["exact_amount"] == {"value": Decimal("0.025"), "currency": "usd"}
    assert total["amount"] == {"value": Decimal("0.03"), "currency": "usd"}
    total = await get(api, "costs/total", start_time=D0, end_time=D0 + 2 * 86400)
    assert total["exact_amount"]["value"] == Decimal("0.225334")
    assert total["amount"]["value"] == Decimal("0.23")


async def test_ungrouped_costs_and_model_filter(api: httpx.AsyncClient) -> None:
    page = await get(api, start_time=D0, end_time=D0 + 86400)
    assert [x["amount"]["value"] for x in page["data"][0]["results"]] == [Decimal("0.025334")]
    assert page["data"][0]["results"][0]["line_item"] is None
    page = await get(api, start_time=D0, end_time=D0 + 86400, models=CHAT, group_by="model")
    assert [(x["model"], x["amount"]["value"]) for x in page["data"][0]["results"]] == [
        (CHAT, Decimal("0.000334"))
    ]


async def test_only_day_buckets_and_the_operator_token(api: httpx.AsyncClient) -> None:
    r = await api.get(
        "/v1/projects/proj_a/costs", params={"start_time": D0, "bucket_width": "1h"}, headers=AUTH
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "bucket_width"
    params = {"start_time": D0 - 180 * 86400, "end_time": D0 + 86400, "limit": 180}
    page = (await api.get("/v1/projects/proj_a/costs", params=params, headers=AUTH)).json()
    assert len(page["data"]) == 180
    assert page["has_more"] is True
    r = await api.get("/v1/projects/proj_a/costs", params={**params, "limit": 181}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "limit"
    r = await api.get("/v1/projects/proj_a/costs", params={"start_time": D0})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
