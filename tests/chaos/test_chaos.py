"""Chaos: steady traffic through two gateway replicas while Kafka, Redis, PostgreSQL, metering,
billing and the key service are each killed with SIGKILL and restarted in turn. Afterwards the
Usage API and the Costs API equal exactly what the clients were told: nothing lost, nothing
counted twice.

Every server is the test's own (``private_*``), so the shared ones are never touched. What
"told" means for each kind of answer is in ``tests/chaos/traffic.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from deploy.stack import Endpoints
from shared.kafka import ensure_topics
from tests.chaos.ledgers import accepted_everywhere, ledgers_equal_told, make_keys, watch_spools
from tests.chaos.traffic import Tally, client_loop
from tests.e2e.system import System, start_system
from tests.private_servers import Private

CLIENTS = 4
RATE = 3.0  # requests a second per client: 12 a second over both gateways
DOWNTIME_S = 3.0  # how long each victim stays dead before its restart begins
SETTLE_S = 2.0  # traffic before the first fault, between faults and after the last
# Consumers that rejoin their group after a SIGKILL wait for the dead member's session.
CONSUMER = {"SESSION_TIMEOUT_MS": "6000", "MAX_BATCH": "200"}


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
        keys = await make_keys(system)
        gateways = [system.url("gateway"), system.url("gateway-1")]
        await accepted_everywhere(gateways, keys)
        start = int(time.time()) - 3600
        ready_s = time.monotonic() - began

        tally, stop = Tally(), asyncio.Event()
        clients = [
            asyncio.create_task(client_loop(i, gateways, keys, rate=RATE, stop=stop, tally=tally))
            for i in range(CLIENTS)
        ]
        deepest: dict[str, int] = {}
        clients.append(asyncio.create_task(watch_spools(gateways, stop, deepest)))
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

        await ledgers_equal_told(system, keys, start, tally)
        print(f"ledgers caught up {time.monotonic() - began:.0f}s after the start")
    finally:
        await asyncio.to_thread(system.stop)
