"""Chaos: steady traffic through two gateway replicas while Kafka, Redis, PostgreSQL, metering,
billing and the key service are each killed with SIGKILL and restarted in turn. Afterwards the
Usage API and the Costs API equal exactly what the clients were told: nothing lost, nothing
counted twice.

Every server is the test's own (``private_*``), so the shared ones are never touched. What
"told" means for each kind of answer is in ``tests/chaos/traffic.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.stack import Endpoints
from shared.catalogue import load_catalogue
from shared.kafka import ensure_topics
from tests.chaos.traffic import Key, Tally, Told, client_loop
from tests.e2e.system import System, start_system
from tests.polling import eventually
from tests.private_servers import Private

CLIENTS = 4
RATE = 3.0  # requests a second per client: 12 a second over both gateways
DOWNTIME_S = 3.0  # how long each victim stays dead before its restart begins
SETTLE_S = 2.0  # traffic before the first fault, between faults and after the last
CATCH_UP_S = 90.0  # deadline for the ledgers to count what was sent
# Consumers that rejoin their group after a SIGKILL wait for the dead member's session.
CONSUMER = {"SESSION_TIMEOUT_MS": "6000", "MAX_BATCH": "200"}


def _api(system: System, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.url(name),
        headers={"Authorization": f"Bearer {system.admin_token}"},
        timeout=10,
    )


async def _keys(system: System) -> list[Key]:
    """Two projects, one key each."""
    out = []
    async with _api(system, "keys") as keys_api:
        for name in ("chaos-a", "chaos-b"):
            project = await keys_api.post("/v1/projects", json={"name": name})
            assert project.status_code == 201, project.text
            project_id = project.json()["id"]
            key = await keys_api.post(f"/v1/projects/{project_id}/keys", json={"name": name})
            assert key.status_code == 201, key.text
            out.append(Key(project_id, key.json()["id"], key.json()["key"]))
    return out


async def _accepted_everywhere(gateways: list[str], keys: list[Key]) -> None:
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


async def _usage(system: System, keys: list[Key], start: int) -> dict[str, Told]:
    """The Usage API's totals per key, over both projects."""
    totals: dict[str, Told] = {}
    async with _api(system, "metering") as metering:
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


async def _costs(system: System, keys: list[Key], start: int) -> dict[str, Decimal]:
    """The Costs API's totals per key, over both projects."""
    totals: dict[str, Decimal] = {}
    async with _api(system, "billing") as billing:
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


async def _watch_spools(gateways: list[str], stop: asyncio.Event, deepest: dict[str, int]) -> None:
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


Fault = tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]


def _faults(system: System, kafka: Private, redis: Private, postgres: Private) -> list[Fault]:
    """Each victim's crash (SIGKILL, itself and its children) and its restart, in turn."""

    def service(name: str) -> Fault:
        process = system.processes[name]
        return (
            name,
            lambda: asyncio.to_thread(process.kill),
            lambda: asyncio.to_thread(process.start),
        )

    return [
        ("kafka", kafka.akill, kafka.astart),
        ("redis", redis.akill, redis.astart),
        ("postgres", postgres.akill, postgres.astart),
        service("metering"),
        service("billing"),
        service("keys"),  # its own usage.events consumer (last_used_at), and the verify path
    ]


@pytest.mark.slow
async def test_ledgers_equal_what_clients_were_told_through_crashes(
    private_kafka: Private,
    private_redis: Private,
    private_postgres: Private,
    unique: str,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    prefix = f"chaos-{unique}."
    await ensure_topics(private_kafka.kafka_bootstrap, prefix=prefix)
    endpoints = Endpoints(
        private_kafka.kafka_bootstrap, private_postgres.database_url, private_redis.redis_url
    )
    system = await asyncio.to_thread(
        start_system,
        endpoints,
        prefix,
        unique,
        tmp_path,
        gateways=2,
        settings={"metering": CONSUMER, "billing": CONSUMER},
    )
    try:
        keys = await _keys(system)
        gateways = [system.url("gateway"), system.url("gateway-1")]
        await _accepted_everywhere(gateways, keys)
        start = int(time.time()) - 3600
        ready_s = time.monotonic() - began

        tally, stop = Tally(), asyncio.Event()
        clients = [
            asyncio.create_task(client_loop(i, gateways, keys, rate=RATE, stop=stop, tally=tally))
            for i in range(CLIENTS)
        ]
        deepest: dict[str, int] = {}
        clients.append(asyncio.create_task(_watch_spools(gateways, stop, deepest)))
        answered_while_down: dict[str, int] = {}
        try:
            # Deliberate durations, not waits for an outcome: traffic flows all along.
            await asyncio.sleep(SETTLE_S)
            for name, kill, restart in _faults(
                system, private_kafka, private_redis, private_postgres
            ):
                before = tally.answers
                await kill()
                await asyncio.sleep(DOWNTIME_S)
                await restart()
                answered_while_down[name] = tally.answers - before
                await asyncio.sleep(SETTLE_S)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        traffic_s = time.monotonic() - began - ready_s
        summary = (
            f"ready in {ready_s:.0f}s, traffic {traffic_s:.0f}s, {tally.answers} answers, "
            f"while down {answered_while_down}, deepest spools {deepest}, "
            f"unmetered {dict(tally.unmetered)}, "
            f"told {tally.by_key}"
        )
        print(summary)

        assert not tally.unknown, f"answers whose count the client cannot know: {tally.unknown[:5]}"
        # Traffic went on through every outage (the gateways never depend on the victims).
        assert all(n > 0 for n in answered_while_down.values()), summary
        assert sum(t.errors for t in tally.by_key.values()) > 0, "no metered error was sent"
        assert any(deepest.values()), f"no usage event went through a spool: {summary}"

        expected = tally.expected_usage()
        await eventually(
            lambda: _usage(system, keys, start),
            until=lambda got: got == expected,
            timeout=CATCH_UP_S,
            interval=0.5,
            what=f"usage equal to what clients were told ({expected})",
        )
        billing_catalogue = system.processes["billing"].env["TOLLGATE_BILLING_CATALOGUE_PATH"]
        expected_costs = tally.expected_costs(load_catalogue(Path(billing_catalogue)))
        await eventually(
            lambda: _costs(system, keys, start),
            until=lambda got: got == expected_costs,
            timeout=CATCH_UP_S,
            interval=0.5,
            what=f"costs equal to tokens x prices ({expected_costs})",
        )
        print(f"ledgers caught up {time.monotonic() - began:.0f}s after the start")
    finally:
        await asyncio.to_thread(system.stop)
