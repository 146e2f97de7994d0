"""The gateways' spend read on a real ledger: totals per key and project since a UTC day or
ever, exact to 18 decimals, guarded by the internal token only, ``since`` checked, 503 when
the ledger is away."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from services.billing.main import create_app
from services.billing.settings import BillingSettings
from tests.metering.harness import (
    ADMIN_TOKEN,
    AUTH,
    CATALOGUE_YAML,
    EMBED,
    INTERNAL_AUTH,
    INTERNAL_TOKEN,
    expected,
    running,
    stats,
    usage,
)
from tests.metering.ledgers import Case
from tests.polling import eventually
from tests.private_servers import Private

DAY = datetime(2026, 3, 2, tzinfo=UTC)
D0 = int(DAY.timestamp())
# Prices of 12 decimals per million tokens: one token costs an amount of 18 decimals.
THIRD, ATOM = "test/third", "test/atom"
FINE_MODELS = f"""
  - id: {THIRD}
    upstream: {{base_url: "http://127.0.0.1:1/v1"}}
    prices:
      - {{effective_from: "2026-01-01T00:00:00Z", input_per_million: "0.333333333333",
          output_per_million: "0"}}
  - id: {ATOM}
    upstream: {{base_url: "http://127.0.0.1:1/v1"}}
    prices:
      - {{effective_from: "2026-01-01T00:00:00Z", input_per_million: "0.000000000001",
          output_per_million: "0"}}
"""
EVENTS = [
    # The day before: 600 x 0.150 + 400 x 0.075 + 10 x 0.600, per million = 0.000126
    usage(key="key_2", at=DAY - timedelta(hours=14), input_tokens=1000, cached=400,
          output_tokens=10),
    # 1,250,000 x 0.020 / 1e6 = 0.025
    usage(key="key_1", model=EMBED, at=DAY + timedelta(hours=1), input_tokens=1_250_000,
          output_tokens=0),
    # The day after, past the price change: 1,000,000 x 0.2 / 1e6 = 0.2
    usage(key="key_2", at=DAY + timedelta(days=1), input_tokens=1_000_000, output_tokens=0),
    # Another project: never in proj_a's answer.
    usage(project="proj_b", key="key_9", at=DAY, input_tokens=1_000_000, output_tokens=0),
    # proj_c: one token a day at 0.000000333333333333 on three days, and one at 1e-18.
    *(
        usage(project="proj_c", key="key_x", model=THIRD, at=DAY + timedelta(days=d),
              input_tokens=1, output_tokens=0)
        for d in range(3)
    ),
    usage(project="proj_c", key="key_y", model=ATOM, at=DAY, input_tokens=1, output_tokens=0),
]  # fmt: skip


@pytest.fixture
def catalogue_path(tmp_path: Path) -> Path:
    """The shared test price book plus two models whose per-token cost has 18 decimals."""
    path = tmp_path / "models.yaml"
    path.write_text(CATALOGUE_YAML + FINE_MODELS)
    return path


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


async def spend(client: httpx.AsyncClient, project: str = "proj_a", since: int = D0) -> Any:
    r = await client.get(
        f"/internal/v1/projects/{project}/spend", params={"since": since}, headers=INTERNAL_AUTH
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_spend_per_key_and_project_since_a_day_and_ever(api: httpx.AsyncClient) -> None:
    before = int(time.time())
    body = await spend(api, since=D0)
    assert body.pop("as_of") >= before
    assert body == {
        "object": "project.spend",
        "project_id": "proj_a",
        "since": D0,
        "spent_usd": "0.225",
        "keys": {"key_1": "0.025", "key_2": "0.2"},
    }
    ever = await spend(api, since=0)
    assert (ever["since"], ever["spent_usd"]) == (0, "0.225126")
    assert ever["keys"] == {"key_1": "0.025", "key_2": "0.200126"}
    # The day after: only that day's spend; a day past all spend: nothing.
    later = await spend(api, since=D0 + 86400)
    assert (later["spent_usd"], later["keys"]) == ("0.2", {"key_2": "0.2"})
    assert (await spend(api, since=D0 + 2 * 86400))["keys"] == {}
    # The same figures as the Costs API's total over the same days (the ledger of truth).
    r = await api.get(
        "/v1/projects/proj_a/costs/total",
        params={"start_time": 0, "end_time": D0 + 2 * 86400},
        headers=AUTH,
    )
    exact = json.loads(r.text, parse_float=Decimal)["exact_amount"]["value"]
    assert exact == Decimal(ever["spent_usd"])


async def test_a_project_without_spend(api: httpx.AsyncClient) -> None:
    body = await spend(api, "proj_nobody", since=0)
    assert (body["project_id"], body["spent_usd"], body["keys"]) == ("proj_nobody", "0", {})


async def test_amounts_of_18_decimals_sum_exactly(api: httpx.AsyncClient, case: Case) -> None:
    body = await spend(api, "proj_c", since=0)
    # Strings, so no JSON parser can take them through a float.
    assert body["keys"] == {"key_x": "0.000000999999999999", "key_y": "0.000000000000000001"}
    assert body["spent_usd"] == "0.000001"
    want = expected(EVENTS, case.catalogue_path).costs
    assert Decimal(body["keys"]["key_x"]) == want[("proj_c", "key_x", THIRD)]
    assert (await spend(api, "proj_c", since=D0 + 86400))["keys"] == {
        "key_x": "0.000000666666666666"
    }


async def test_only_the_internal_token_opens_it(api: httpx.AsyncClient) -> None:
    path = f"/internal/v1/projects/proj_a/spend?since={D0}"
    for headers in (
        {},
        AUTH,  # the operator's token is not the gateways'
        {"Authorization": f"Bearer {INTERNAL_TOKEN}x"},
        {"Authorization": f"Basic {INTERNAL_TOKEN}"},
    ):
        r = await api.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
    # ... and the gateways' token does not open the operator's Costs API.
    for route in ("costs", "costs/total"):
        r = await api.get(
            f"/v1/projects/proj_a/{route}", params={"start_time": D0}, headers=INTERNAL_AUTH
        )
        assert r.status_code == 401, r.text


async def test_since_must_be_a_utc_day_boundary(api: httpx.AsyncClient) -> None:
    path = "/internal/v1/projects/proj_a/spend"
    for params in (
        {},
        {"since": ""},
        {"since": D0 + 3600},
        {"since": -86400},
        {"since": "1e5"},
        {"since": "+86400"},
        {"since": "86_400"},
        {"since": 10**13 * 86400},
    ):
        r = await api.get(path, params=params, headers=INTERNAL_AUTH)
        assert r.status_code == 400, (params, r.text)
        error = r.json()["error"]
        assert (error["param"], error["type"]) == ("since", "invalid_request_error"), params


@pytest.mark.unit
def test_the_internal_token_is_required_real_and_not_the_admin_one() -> None:
    base: dict[str, Any] = {"admin_token": SecretStr(ADMIN_TOKEN)}
    for internal in ("", "changeme", "short", ADMIN_TOKEN):
        with pytest.raises(ValidationError, match="INTERNAL_TOKEN"):
            BillingSettings(**base, internal_token=SecretStr(internal))
    ok = BillingSettings(**base, internal_token=SecretStr(INTERNAL_TOKEN))
    assert ok.internal_token.get_secret_value() == INTERNAL_TOKEN


@pytest.mark.unit
def test_the_internal_token_comes_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_BILLING_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("TOLLGATE_BILLING_INTERNAL_TOKEN", "env-internal-token-0123456789")
    settings = BillingSettings()
    assert settings.internal_token.get_secret_value() == "env-internal-token-0123456789"


@pytest.mark.slow
async def test_a_ledger_outage_answers_503(case: Case, private_postgres: Private) -> None:
    case = case.with_database(private_postgres.database_url)
    _, settings = case.settings()
    await case.produce(EVENTS[:1])
    async with running(create_app(settings)) as client:
        await eventually(lambda: stats(client), until=lambda s: s["applied"] == 1, what="applied")
        assert (await spend(client, since=0))["spent_usd"] == "0.000126"
        await private_postgres.astop()
        r = await client.get(
            "/internal/v1/projects/proj_a/spend", params={"since": 0}, headers=INTERNAL_AUTH
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "service_unavailable"
        await private_postgres.astart()
        await eventually(
            lambda: client.get(
                "/internal/v1/projects/proj_a/spend", params={"since": 0}, headers=INTERNAL_AUTH
            ),
            until=lambda r: r.status_code == 200,
            timeout=30,
            what="ledger back",
        )
