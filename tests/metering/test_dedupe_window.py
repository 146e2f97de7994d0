"""The dedupe window: never shorter than the topic's retention; the days of older event ids are
dropped whole; an id outside the window, or not a UUIDv7, cannot be deduplicated: dead-lettered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr, ValidationError

from services.metering.consumer import MinuteDays, usage_consumer
from services.metering.main import MIGRATIONS
from services.metering.settings import MeteringSettings
from shared.db import apply_migrations, create_pool
from shared.exactly_once import LedgerConsumer, parse_usage
from shared.exactly_once.settings import RETENTION_S
from shared.exactly_once.store import claim
from shared.exactly_once.types import ConsumerConfig
from tests.metering.harness import ADMIN_TOKEN, INTERNAL_TOKEN, usage
from tests.metering.ledgers import Case

TOKENS: dict[str, Any] = {
    "admin_token": SecretStr(ADMIN_TOKEN),
    "internal_token": SecretStr(INTERNAL_TOKEN),
}


@pytest.mark.unit
def test_a_window_shorter_than_the_retention_is_refused() -> None:
    with pytest.raises(ValidationError, match="dedupe_window_s"):
        MeteringSettings(**TOKENS, dedupe_window_s=RETENTION_S - 1)
    assert MeteringSettings(**TOKENS).dedupe_window_s >= RETENTION_S


async def test_upkeep_drops_the_days_of_ids_past_the_window_and_makes_the_next(
    case: Case,
) -> None:
    settings, _ = case.settings()
    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        consumer = usage_consumer(settings, pool, "test")  # not started: its upkeep only
        now = datetime.now(UTC)
        window = timedelta(seconds=settings.dedupe_window_s)
        old_day = (now - window - timedelta(days=2)).date()
        async with pool.acquire() as conn:
            await consumer.seen_days.ensure(conn, [old_day])
        old = uuid7_at(now - window - timedelta(days=2))
        edge = uuid7_at(now - window + timedelta(hours=25))
        recent = uuid7_at(now - timedelta(minutes=1))
        async with pool.acquire() as conn:
            await consumer.seen_days.ensure(conn, [(now - window + timedelta(hours=25)).date()])
            await conn.executemany(
                "INSERT INTO processed_events (event_id) VALUES ($1)", [(old,), (edge,), (recent,)]
            )
        await consumer.cleanup()
        left = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM processed_events")}
        assert left == {edge, recent}
        async with pool.acquire() as conn:
            days = await consumer.seen_days.days(conn)
        assert old_day not in days
        assert (now + timedelta(days=2)).date() in days  # made ahead
        assert min(days) == (now - window).date()  # the oldest day inside the window
        # The minute ledger's days too: today and the next two.
        minute_days = await pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_minute'::regclass"
        )
        assert f"usage_minute_d{now:%Y%m%d}" in {r["relname"] for r in minute_days}
    finally:
        await pool.close()


@pytest.mark.unit
def test_ids_outside_the_window_or_not_uuid7_are_dead_lettered() -> None:
    config = ConsumerConfig("x", "t", "d", "g", "c", dedupe_window=timedelta(days=8))
    no_pool: Any = None
    consumer = LedgerConsumer(config, no_pool, parse_usage, MinuteDays(35).apply)
    now = datetime.now(UTC)
    cases = {
        0: usage().model_copy(update={"event_id": uuid.uuid4()}),
        1: usage().model_copy(update={"event_id": uuid7_at(now - timedelta(days=10))}),
        2: usage().model_copy(update={"event_id": uuid7_at(now + timedelta(hours=1))}),
        3: usage().model_copy(update={"event_id": uuid7_at(now - timedelta(days=7))}),
    }
    batch = {TopicPartition("t", 0): [record(o, e.to_bytes()) for o, e in cases.items()]}
    prepared = consumer._prepare(batch, epoch=0)
    reasons = {r.offset: reason for r, reason in prepared.poison}
    assert "not a UUIDv7" in reasons[0]
    assert "outside the dedupe window" in reasons[1]
    assert "outside the dedupe window" in reasons[2]
    assert [e.event_id for e in prepared.items] == [cases[3].event_id]


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 made at ``moment`` (its random bits random)."""
    millis = int(moment.timestamp() * 1000)
    value = (millis << 80) | (0x7 << 76) | (uuid.uuid4().int & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def record(offset: int, value: bytes) -> Any:
    return SimpleNamespace(offset=offset, value=value)


async def test_an_id_still_in_the_window_is_a_duplicate(case: Case) -> None:
    settings, _ = case.settings()
    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        event, other = usage(), usage()
        async with pool.acquire() as conn:
            assert await claim(conn, [event]) == [event]
            assert await claim(conn, [other, event]) == [other]
    finally:
        await pool.close()
