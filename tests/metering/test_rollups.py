"""The hour and day rollups: kept with the minutes, and a page summed from them is the same as
summing minutes, whatever the window's alignment, width, grouping and filters."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from deploy.stack import Endpoints
from services.metering import repository
from services.metering.consumer import MinuteDays
from services.metering.main import MIGRATIONS
from services.metering.repository import _SLOTS, segments
from services.metering.service import minute_deltas
from shared.db import apply_migrations, create_pool
from shared.usage_query import UsageQuery
from tests.metering.harness import CHAT, EMBED, usage

START = datetime(2026, 3, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def random_window(rng: random.Random) -> tuple[datetime, datetime]:
    start = START + timedelta(minutes=rng.randrange(0, 4 * 1440))
    return start, start + timedelta(minutes=rng.randrange(1, 3 * 1440), seconds=rng.randrange(60))


@pytest.mark.unit
@pytest.mark.parametrize("width", [60, 3600, 86400])
def test_the_stretches_cover_the_window_once_each_aligned_to_its_grain(width: int) -> None:
    rng = random.Random(width)
    for _ in range(2_000):
        start, until = random_window(rng)
        covered = timedelta()
        previous_end = start
        for (first, last), grain in zip(segments(start, until, width), _SLOTS, strict=True):
            if (first, last) == (EPOCH, EPOCH):
                continue
            assert grain <= width
            assert first == previous_end  # in order, no gap, no overlap
            if grain > 60:
                assert (first - EPOCH).total_seconds() % grain == 0
                assert (last - EPOCH).total_seconds() % grain == 0
            covered += last - first
            previous_end = last
        assert previous_end == until
        assert covered == until - start


@pytest.mark.unit
def test_a_month_of_days_reads_days_and_short_edges() -> None:
    start = datetime(2026, 3, 1, 10, 17, tzinfo=UTC)
    until = datetime(2026, 3, 31, 8, 2, tzinfo=UTC)
    minute_lo, hour_lo, days, hour_hi, minute_hi = segments(start, until, 86400)
    assert minute_lo == (start, datetime(2026, 3, 1, 11, tzinfo=UTC))
    assert hour_lo == (datetime(2026, 3, 1, 11, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    assert days == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert hour_hi == (datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 3, 31, 8, tzinfo=UTC))
    assert minute_hi == (datetime(2026, 3, 31, 8, tzinfo=UTC), until)


@pytest.fixture
async def pool(endpoints: Endpoints, unique: str) -> AsyncIterator[asyncpg.Pool]:
    schema = f"m_rollups_{unique}"
    pool = await create_pool(endpoints.database_url, schema)
    try:
        await apply_migrations(pool, schema, MIGRATIONS)
        yield pool
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


async def reference(pool: asyncpg.Pool, project: str, query: UsageQuery) -> list[tuple[Any, ...]]:
    """The page summed from minute rows only, as before the rollups."""
    start, until = query.window(60)
    key_col = "key_id" if "api_key_id" in query.group_by else "NULL::text"
    model_col = "model" if "model" in query.group_by else "NULL::text"
    rows = await pool.fetch(
        f"""SELECT date_bin($4::interval, minute, TIMESTAMPTZ 'epoch') AS bucket,
               {key_col} AS key_id, {model_col} AS model, sum(requests)::bigint,
               sum(input_tokens)::bigint, sum(cached_input_tokens)::bigint,
               sum(output_tokens)::bigint, sum(errors)::bigint
        FROM usage_minute WHERE project_id = $1 AND minute >= $2 AND minute < $3
          AND ($5::text[] IS NULL OR key_id = ANY($5::text[]))
          AND ($6::text[] IS NULL OR model = ANY($6::text[]))
        GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST""",
        project,
        start,
        until,
        query.width_interval,
        list(query.api_key_ids) or None,
        list(query.models) or None,
    )
    return [tuple(r) for r in rows]


async def test_pages_from_rollups_equal_pages_from_minutes(pool: asyncpg.Pool) -> None:
    rng = random.Random(25)
    events = [
        usage(
            project=rng.choice(["proj_a", "proj_b"]),
            key=f"key_{rng.randrange(4)}",
            model=rng.choice([CHAT, EMBED]),
            at=START + timedelta(seconds=rng.randrange(0, 6 * 86400)),
            input_tokens=rng.randrange(1, 500),
            output_tokens=rng.randrange(0, 100),
            status=rng.choice([200, 200, 200, 429, 500]),
        )
        for _ in range(3_000)
    ]
    days = MinuteDays(3660)  # March 2026's minutes kept
    for i in range(0, len(events), 500):  # several batches, rows added to again
        async with pool.acquire() as conn:
            await days.before_batch(conn, events[i : i + 500])
            async with conn.transaction():
                await repository.add_usage(conn, minute_deltas(events[i : i + 500]))
    hours = await pool.fetchval("SELECT count(*) FROM usage_hour")
    minutes = await pool.fetchval("SELECT count(*) FROM usage_minute")
    assert 0 < hours < minutes
    assert await pool.fetchval("SELECT sum(requests) FROM usage_day") == len(events)
    for case in range(300):
        start, until = random_window(rng)
        width = rng.choice(["1m", "1h", "1d"])
        query = UsageQuery(
            start_time=int(start.timestamp()),
            end_time=int(until.timestamp()),
            bucket_width=width,
            group_by=tuple(g for g in ("api_key_id", "model") if rng.random() < 0.5),
            api_key_ids=("key_1", "key_2") if rng.random() < 0.3 else (),
            models=(CHAT,) if rng.random() < 0.3 else (),
            limit={"1m": 1440, "1h": 168, "1d": 31}[width],
            page_start=int(start.timestamp())
            // {"1m": 60, "1h": 3600, "1d": 86400}[width]
            * {"1m": 60, "1h": 3600, "1d": 86400}[width],
        )
        project = rng.choice(["proj_a", "proj_b"])
        got = [tuple(r) for r in await repository.sum_buckets(pool, project, query)]
        assert got == await reference(pool, project, query), (case, query)
