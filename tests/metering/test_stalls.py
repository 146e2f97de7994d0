"""A consumer stalled by an error no record causes retries and shows it: never dead-letters.

A ledger table gone (42P01) or a schema that refuses every record (a CHECK no row can meet,
23514: a class that records *can* cause) must not send the batch to the DLQ. The consumer
retries, and once records wait and nothing committed for ``stall_after_s`` its /readyz says
503 with the lag; when the database is fixed it goes on and counts everything exactly once.
"""

from __future__ import annotations

import asyncpg
import httpx

from services.metering.main import create_app as create_metering
from tests.metering.harness import running, stats, stream_of
from tests.metering.ledgers import Case
from tests.polling import eventually


async def _requests(conn: asyncpg.Connection, schema: str) -> int:
    return int(
        await conn.fetchval(f'SELECT coalesce(sum(requests), 0) FROM "{schema}".usage_minute')
    )


async def _metric(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"tollgate_consumer_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def _stall_and_recover(case: Case, break_sql: str, fix_sql: str) -> dict[str, object]:
    schema = case.schemas[0]
    m_set, _ = case.settings(max_batch=100, stall_after_s=2.0, lag_interval_s=0.3)
    first, second = stream_of(150), stream_of(120, seed=1000)
    conn = await asyncpg.connect(case.database_url)
    try:
        async with running(create_metering(m_set)) as m:
            await case.produce(first)
            await eventually(lambda: _requests(conn, schema), until=lambda n: n == 150, timeout=30)
            ready = await m.get("/readyz")
            assert ready.status_code == 200, ready.text
            await conn.execute(break_sql.format(schema=schema))
            await case.produce(second)
            stalled = await eventually(
                lambda: m.get("/readyz"),
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
            assert await _metric(m, "stalled") == 1
            assert await _metric(m, "lag") == len(second)
            await conn.execute(fix_sql.format(schema=schema))
            await eventually(lambda: _requests(conn, schema), until=lambda n: n == 270, timeout=60)
            await eventually(
                lambda: m.get("/readyz"), until=lambda r: r.status_code == 200, timeout=30
            )
            after = await stats(m)
            assert (after["lag"], after["stalled"]) == (0, False), after
            assert await _metric(m, "stalled") == 0
            return after
    finally:
        await conn.close()


async def test_a_missing_table_stalls_goes_not_ready_and_recovers(case: Case) -> None:
    after = await _stall_and_recover(
        case,
        'ALTER TABLE "{schema}".usage_minute RENAME TO usage_minute_away',
        'ALTER TABLE "{schema}".usage_minute_away RENAME TO usage_minute',
    )
    assert (after["dead_letters"], after["refused"]) == (0, 0), after
    assert "UndefinedTableError" in str(after["last_error"]), after


async def test_a_schema_refusing_every_record_stalls_instead_of_dead_lettering(
    case: Case,
) -> None:
    # 23514 is a class a record's values can cause; but a record applied before is refused
    # too (the control), so the fault is the database's.
    after = await _stall_and_recover(
        case,
        'ALTER TABLE "{schema}".usage_minute ADD CONSTRAINT nothing_fits'
        " CHECK (requests < 0) NOT VALID",
        'ALTER TABLE "{schema}".usage_minute DROP CONSTRAINT nothing_fits',
    )
    assert (after["dead_letters"], after["refused"]) == (0, 0), after
    assert "NotRecordSpecific" in str(after["last_error"]), after
