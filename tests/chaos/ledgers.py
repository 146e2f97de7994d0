"""The chaos tests' view of the system: their keys, whether every gateway accepts them, the
Usage and Costs APIs summed per key, and the gateways' spool depths during an outage.

Shared by every test that compares the ledgers with what clients were told
(``tests/chaos/traffic.py``), whichever servers it breaks.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from shared.catalogue import load_catalogue
from tests.chaos.traffic import Key, Tally, Told
from tests.e2e.system import System
from tests.polling import eventually

CATCH_UP_S = 90.0  # deadline for the ledgers to count what was sent


def admin_api(system: System, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.url(name),
        headers={"Authorization": f"Bearer {system.admin_token}"},
        timeout=10,
    )


async def make_keys(system: System, names: tuple[str, ...] = ("chaos-a", "chaos-b")) -> list[Key]:
    """One project per name, one key each."""
    out = []
    async with admin_api(system, "keys") as keys_api:
        for name in names:
            project = await keys_api.post("/v1/projects", json={"name": name})
            assert project.status_code == 201, project.text
            project_id = project.json()["id"]
            key = await keys_api.post(f"/v1/projects/{project_id}/keys", json={"name": name})
            assert key.status_code == 201, key.text
            out.append(Key(project_id, key.json()["id"], key.json()["key"]))
    return out


async def accepted_everywhere(gateways: list[str], keys: list[Key]) -> None:
    """Every key works at every gateway (``/v1/models`` authenticates and is not metered)."""
    async with httpx.AsyncClient(timeout=5) as client:
        for gateway in gateways:
            for key in keys:

                async def accepted(g: str = gateway, k: Key = key) -> int:
                    headers = {"authorization": f"Bearer {k.secret}"}
                    return (await client.get(f"{g}/v1/models", headers=headers)).status_code

                await eventually(
                    accepted, until=lambda s: s == 200, what=f"{key.key_id} at {gateway}"
                )


async def usage_totals(system: System, keys: list[Key], start: int) -> dict[str, Told]:
    """The Usage API's totals per key, over both projects."""
    totals: dict[str, Told] = {}
    async with admin_api(system, "metering") as metering:
        for project in {k.project_id for k in keys}:
            got = await metering.get(
                f"/v1/projects/{project}/usage",
                params={"start_time": start, "bucket_width": "1d", "group_by": "api_key_id"},
            )
            if got.status_code != 200:
                return {"unavailable": Told(errors=got.status_code)}
            for bucket in got.json()["data"]:
                for row in bucket["results"]:
                    t = totals.setdefault(row["api_key_id"], Told())
                    t.requests += row["num_model_requests"]
                    t.input_tokens += row["input_tokens"]
                    t.cached_input_tokens += row["input_cached_tokens"]
                    t.output_tokens += row["output_tokens"]
                    t.errors += row["num_errors"]
    return totals


async def cost_totals(system: System, keys: list[Key], start: int) -> dict[str, Decimal]:
    """The Costs API's totals per key, over both projects."""
    totals: dict[str, Decimal] = {}
    async with admin_api(system, "billing") as billing:
        for project in {k.project_id for k in keys}:
            got = await billing.get(
                f"/v1/projects/{project}/costs",
                params={"start_time": start - 86400, "group_by": "api_key_id"},
            )
            if got.status_code != 200:
                return {"unavailable": Decimal(got.status_code)}
            body: dict[str, Any] = json.loads(got.text, parse_float=Decimal)
            for bucket in body["data"]:
                for row in bucket["results"]:
                    assert row["amount"]["currency"] == "usd"
                    key_id = row["api_key_id"]
                    totals[key_id] = totals.get(key_id, Decimal(0)) + Decimal(
                        row["amount"]["value"]
                    )
    return {k: v for k, v in totals.items() if v}


async def watch_spools(gateways: list[str], stop: asyncio.Event, deepest: dict[str, int]) -> None:
    """Sample each gateway's ``spool_depth`` (on ``/readyz``) until stop: the Kafka outage
    must have sent usage events through the spool, or it tested nothing."""
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            for gateway in gateways:
                try:
                    depth = int((await client.get(f"{gateway}/readyz")).json()["spool_depth"])
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    continue
                deepest[gateway] = max(deepest.get(gateway, 0), depth)
            # Sampling pace, not a wait for an outcome.
            await asyncio.sleep(0.5)


async def ledgers_equal_told(
    system: System, keys: list[Key], start: int, tally: Tally, timeout: float = CATCH_UP_S
) -> None:
    """Until the Usage API equals what the clients were told, then the Costs API equals those
    tokens times the billing service's prices; fails at the deadline with both sides."""
    expected = tally.expected_usage()
    await eventually(
        lambda: usage_totals(system, keys, start),
        until=lambda got: got == expected,
        timeout=timeout,
        interval=0.5,
        what=f"usage equal to what clients were told ({expected})",
    )
    billing_catalogue = system.processes["billing"].env["TOLLGATE_BILLING_CATALOGUE_PATH"]
    expected_costs = tally.expected_costs(load_catalogue(Path(billing_catalogue)))
    await eventually(
        lambda: cost_totals(system, keys, start),
        until=lambda got: got == expected_costs,
        timeout=timeout,
        interval=0.5,
        what=f"costs equal to tokens x prices ({expected_costs})",
    )
