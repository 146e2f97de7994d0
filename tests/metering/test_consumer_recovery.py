"""The consumer loop never skips records: an unexpected failure re-reads from stored offsets."""

from __future__ import annotations

from services.metering.consumer import MinuteDays
from services.metering.main import MIGRATIONS
from shared.db import apply_migrations, create_pool
from shared.events import UsageRecorded
from shared.exactly_once import parse_usage
from shared.exactly_once.consumer import LedgerConsumer
from tests.metering.harness import stream_of
from tests.metering.ledgers import Case
from tests.polling import eventually


async def test_a_failing_parser_stalls_then_resumes_without_skipping(case: Case) -> None:
    settings, _ = case.settings(max_batch=100)
    events = stream_of(1500)
    await case.produce(events)
    calls = {"n": 0}

    def flaky(value: bytes | None) -> UsageRecorded:
        # A bug that lasts a while (not poison: the record itself is fine).
        calls["n"] += 1
        if 150 <= calls["n"] < 153:
            raise RuntimeError("injected bug")
        return parse_usage(value)

    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        days = MinuteDays(settings.minute_retention_days)
        consumer = LedgerConsumer(
            settings.consumer_config("test"),
            pool,
            flaky,
            days.apply,
            before_batch=days.before_batch,
            upkeep=days.upkeep,
        )
        await consumer.start()
        try:

            async def requests() -> int:
                return int(
                    await pool.fetchval("SELECT coalesce(sum(requests), 0) FROM usage_minute")
                )

            await eventually(requests, until=lambda n: n == len(events), timeout=60)
            assert consumer.stats.last_error == "RuntimeError('injected bug')"
            assert consumer.stats.dead_letters == 0
            assert consumer.running
            totals = await pool.fetchrow(
                "SELECT sum(input_tokens) AS i, sum(output_tokens) AS o FROM usage_minute"
            )
            assert totals is not None
            assert (totals["i"], totals["o"]) == (
                sum(e.input_tokens for e in events),
                sum(e.output_tokens for e in events),
            )
        finally:
            await consumer.stop()
    finally:
        await pool.close()
