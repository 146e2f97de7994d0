"""A consumer stalled by an error no record causes retries and shows it: never dead-letters.

A ledger table gone (42P01) or a schema that refuses every record (a CHECK no row can meet,
23514: a class that records *can* cause) must not send the batch to the DLQ. The consumer
retries, and once records wait and nothing committed for ``stall_after_s`` its /readyz says
503 with the lag; when the database is fixed it goes on and counts everything exactly once.
"""

from __future__ import annotations

import asyncpg

from services.metering.main import MIGRATIONS
from services.metering.main import create_app as create_metering
from shared.db import apply_migrations, create_pool
from tests.metering.harness import running, stream_of
from tests.metering.ledgers import Case
from tests.metering.stalls import stall_and_recover
from tests.polling import eventually


async def test_a_missing_table_stalls_goes_not_ready_and_recovers(case: Case) -> None:
    after = await stall_and_recover(
        case,
        "metering",
        'ALTER TABLE "{schema}".usage_minute RENAME TO usage_minute_away',
        'ALTER TABLE "{schema}".usage_minute_away RENAME TO usage_minute',
    )
    assert (after["dead_letters"], after["refused"]) == (0, 0), after
    assert "UndefinedTableError" in str(after["last_error"]), after
    conn = await asyncpg.connect(case.database_url)
    try:
        requests = await conn.fetchval(
            f'SELECT sum(requests) FROM "{case.schemas[0]}".usage_minute'
        )
    finally:
        await conn.close()
    assert requests == 270  # every record once, none lost in the stall


async def test_a_schema_refusing_every_record_stalls_instead_of_dead_lettering(
    case: Case,
) -> None:
    # 23514 is a class a record's values can cause; but a record applied before is refused
    # too (the control), so the fault is the database's.
    after = await stall_and_recover(
        case,
        "metering",
        'ALTER TABLE "{schema}".usage_minute ADD CONSTRAINT nothing_fits'
        " CHECK (requests < 0) NOT VALID",
        'ALTER TABLE "{schema}".usage_minute DROP CONSTRAINT nothing_fits',
    )
    assert (after["dead_letters"], after["refused"]) == (0, 0), after
    assert "NotRecordSpecific" in str(after["last_error"]), after


async def test_offsets_unreadable_at_start_stall_with_the_lag_shown(case: Case) -> None:
    """Stuck before the first seek (no position from PostgreSQL): the lag still shows."""
    m_set, _ = case.settings(stall_after_s=2.0, lag_interval_s=0.3)
    schema = case.schemas[0]
    pool = await create_pool(case.database_url, schema)
    try:
        await apply_migrations(pool, schema, MIGRATIONS)
        await pool.execute("ALTER TABLE consumer_offsets RENAME TO consumer_offsets_away")
        events = stream_of(50)
        await case.produce(events)
        async with running(create_metering(m_set)) as m:
            stalled = await eventually(
                lambda: m.get("/readyz"), until=lambda r: r.status_code == 503, timeout=30
            )
            body = stalled.json()
            assert (body["status"], body["lag"], body["batches"]) == ("consumer stalled", 50, 0)
            await pool.execute("ALTER TABLE consumer_offsets_away RENAME TO consumer_offsets")
            await eventually(
                lambda: m.get("/readyz"), until=lambda r: r.status_code == 200, timeout=30
            )
            await eventually(
                lambda: pool.fetchval("SELECT sum(requests) FROM usage_minute"),
                until=lambda n: n == 50,
                timeout=30,
            )
    finally:
        await pool.close()
