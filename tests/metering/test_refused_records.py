"""Records the database refuses are dead-lettered alone; the rest of their batch counts once.

Issue 9, part 3: a NUL in a text column (22021) or a value too long for the ledger's index
(54000) used to stop every partition's counting for good. Now the refused records are found
by splitting the batch, go to the DLQ with the SQLSTATE and message, and good records after
them (same key, other projects) keep being counted, exactly once.
"""

from __future__ import annotations

import base64
from typing import Any

import asyncpg

from services.metering.consumer import MinuteDays
from services.metering.main import MIGRATIONS
from shared.db import apply_migrations, create_pool
from shared.events import UsageRecorded
from shared.exactly_once import parse_usage
from shared.exactly_once.consumer import LedgerConsumer
from tests.metering.harness import both, stats, stream_of, usage
from tests.metering.ledgers import Case
from tests.metering.poison import letters_by_group, noise, raw, send
from tests.polling import eventually

# The reasons a refused record may carry: the database's today; a parse error once the
# event models bound these fields (another part of issue 9); billing's unknown model.
REASONS = ("database refused the record: ", "invalid usage event", "unknown model")


def _bad_records() -> list[tuple[bytes, bytes]]:
    """Four records valid by yesterday's model that PostgreSQL refuses, keyed like good ones."""
    return [
        (b"key_3", raw(usage(key="key_3"), model="x\u0000y")),
        (b"key_5", raw(usage(key="key_5", project="proj_1"), key_id="key_5\u0000bad")),
        (b"key_7", raw(usage(key="key_7"), model=noise(10_000))),
        (b"key_2", raw(usage(key="key_2"), project_id=noise(10_000, seed=1))),
    ]


async def test_refused_records_are_dead_lettered_and_later_ones_counted(case: Case) -> None:
    good = stream_of(600)
    bad = _bad_records()
    records: list[tuple[bytes, bytes]] = [(e.key_id.encode(), e.to_bytes()) for e in good]
    for i, record in enumerate(bad):  # inside batches, with good records after each
        records.insert(100 + 120 * i, record)
    m_set, b_set = case.settings(max_batch=100)
    async with both(m_set, b_set) as (m, b):
        positions = await send(case.bootstrap, case.topic, records)
        await case.assert_ledgers(m, b, good, timeout=60)
        bad_at = {positions[records.index(r)]: r[1] for r in bad}
        groups = {m_set.consumer_group: 4, b_set.consumer_group: 4}
        letters = await letters_by_group(case.bootstrap, case.prefix, groups)
        counters = [await stats(m), await stats(b)]
    for group in groups:
        assert set(letters[group]) == set(bad_at), group
        for at, letter in letters[group].items():
            assert letter.reason.startswith(REASONS), letter.reason
            assert base64.b64decode(letter.payload_base64) == bad_at[at]
            assert not letter.truncated
            assert letter.original_size == len(bad_at[at])
    for c in counters:
        assert c["dead_letters"] == 4, c
        assert (c["status"], c["stalled"], c["lag"]) == ("ok", False, 0), c


async def _requests(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(requests), 0) FROM usage_minute"))


async def test_a_real_data_error_on_chosen_records_dead_letters_only_them(case: Case) -> None:
    """Whatever the event models accept, an apply the database refuses is split around."""
    settings, _ = case.settings(max_batch=250)
    good = stream_of(1200)
    chosen = [
        e.model_copy(update={"request_id": f"req_refuse_{i}"})
        for i, e in enumerate(stream_of(6, seed=500))
    ]
    events: list[UsageRecorded] = list(good)
    for i, e in enumerate(chosen):
        events.insert(150 * i + 7, e)

    days = MinuteDays(settings.minute_retention_days)

    async def refusing_apply(conn: Any, batch: list[UsageRecorded]) -> None:
        for e in batch:
            if e.request_id.startswith("req_refuse"):
                # A real class 22 error from the server: 22P02 invalid_text_representation.
                await conn.fetchval("SELECT $1::text::int", e.request_id)
        await days.apply(conn, batch)

    positions = await send(
        case.bootstrap, case.topic, [(e.key_id.encode(), e.to_bytes()) for e in events]
    )
    chosen_at = {positions[events.index(e)]: e for e in chosen}
    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        config = settings.consumer_config("test-refusing")
        consumer = LedgerConsumer(
            config,
            pool,
            parse_usage,
            refusing_apply,
            before_batch=days.before_batch,
            upkeep=days.upkeep,
        )
        await consumer.start()
        try:
            await eventually(lambda: _requests(pool), until=lambda n: n == len(good), timeout=60)
            await eventually(
                lambda: _stored(pool, case.topic), until=lambda n: n == len(events), timeout=30
            )
            totals = await pool.fetchrow(
                "SELECT sum(input_tokens) AS i, sum(output_tokens) AS o,"
                " sum(cached_input_tokens) AS c FROM usage_minute"
            )
            assert totals is not None
            assert (totals["i"], totals["o"], totals["c"]) == (
                sum(e.input_tokens for e in good),
                sum(e.output_tokens for e in good),
                sum(e.cached_input_tokens for e in good),
            )
            assert consumer.stats.refused == len(chosen)
            assert consumer.stats.dead_letters == len(chosen)
            assert consumer.stats.db_retries == 0  # found by splitting, never retried
            assert consumer.health()["lag"] == 0
        finally:
            await consumer.stop()
    finally:
        await pool.close()
    letters = (await letters_by_group(case.bootstrap, case.prefix, {settings.consumer_group: 6}))[
        settings.consumer_group
    ]
    assert set(letters) == set(chosen_at)
    for at, letter in letters.items():
        assert letter.reason.startswith("database refused the record: 22P02"), letter.reason
        assert "InvalidTextRepresentationError" in letter.reason
        assert base64.b64decode(letter.payload_base64) == chosen_at[at].to_bytes()


async def _stored(pool: asyncpg.Pool, topic: str) -> int:
    """The sum of next offsets stored (the number of records consumed on a fresh topic)."""
    return int(
        await pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE topic = $1", topic
        )
    )
