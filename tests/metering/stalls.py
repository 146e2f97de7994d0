"""Stall a ledger service on purpose with SQL that breaks its schema, watch /readyz and /metrics
say so, then fix the schema and watch it recover (shared by the metering and billing tests).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from services.billing.main import create_app as create_billing
from services.metering.main import create_app as create_metering
from tests.metering.harness import running, stats, stream_of
from tests.metering.ledgers import Case
from tests.polling import eventually


async def consumed(conn: asyncpg.Connection, schema: str) -> int:
    """Records consumed so far on a fresh topic: the sum of the next offsets stored."""
    return int(
        await conn.fetchval(
            f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".consumer_offsets'
        )
    )


async def metric(client: httpx.AsyncClient, name: str) -> float:
    """One consumer gauge or counter from /metrics."""
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"tollgate_consumer_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def stall_and_recover(
    case: Case, service: str, break_sql: str, fix_sql: str
) -> dict[str, Any]:
    """Consume, break the schema ({schema} in the SQL), see 503 with the lag, fix, see 200."""
    m_set, b_set = case.settings(max_batch=100, stall_after_s=2.0, lag_interval_s=0.3)
    app = create_metering(m_set) if service == "metering" else create_billing(b_set)
    schema = case.schemas[0] if service == "metering" else case.schemas[1]
    first, second = stream_of(150), stream_of(120, seed=1000)
    conn = await asyncpg.connect(case.database_url)
    try:
        async with running(app) as client:
            await case.produce(first)
            await eventually(lambda: consumed(conn, schema), until=lambda n: n == 150, timeout=30)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            await conn.execute(break_sql.format(schema=schema))
            await case.produce(second)
            stalled = await eventually(
                lambda: client.get("/readyz"),
                until=lambda r: r.status_code == 503,
                timeout=30,
                what="not ready",
            )
            body = stalled.json()
            assert body["status"] == "consumer stalled", body
            assert (body["stalled"], body["lag"]) == (True, len(second)), body
            assert body["last_commit_age_s"] >= 2.0, body
            assert body["db_retries"] > 0, body
            assert body["dead_letters"] == 0, body
            assert await metric(client, "stalled") == 1
            assert await metric(client, "lag") == len(second)
            await conn.execute(fix_sql.format(schema=schema))
            await eventually(lambda: consumed(conn, schema), until=lambda n: n == 270, timeout=60)
            await eventually(
                lambda: client.get("/readyz"), until=lambda r: r.status_code == 200, timeout=30
            )
            after = await stats(client)
            assert (after["lag"], after["stalled"]) == (0, False), after
            assert await metric(client, "stalled") == 0
            return after
    finally:
        await conn.close()
