"""Metering's consumer wiring: usage.events into the usage ledger, exactly once.

Minute rows live in day partitions (``usage_minute``) kept ``minute_retention_days``: a
batch's minutes older than that go to the hour and day rollups only, and the days a batch
needs are made before its transaction; every cleanup makes the next days and drops those past
retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from services.metering import repository
from services.metering.service import minute_deltas
from services.metering.settings import MeteringSettings
from shared.events import UsageRecorded, utc_now
from shared.exactly_once import LedgerConsumer, parse_usage
from shared.exactly_once.partitions import DayPartitions, day_start, days_between

if TYPE_CHECKING:
    from shared.exactly_once import Conn

DAYS_AHEAD = 2


class MinuteDays:
    """The minute ledger's day partitions and retention."""

    def __init__(self, retention_days: int) -> None:
        self.retention = timedelta(days=retention_days)
        self.partitions = DayPartitions("usage_minute", "timestamptz")

    def oldest_kept(self) -> datetime:
        """The first minute kept: the start of the oldest day within retention."""
        return day_start((utc_now() - self.retention).date())

    async def before_batch(self, conn: Conn, events: list[UsageRecorded]) -> None:
        """The days of the batch's minutes that are kept, attached before its transaction."""
        oldest = self.oldest_kept()
        days = {e.occurred_at.astimezone(UTC).date() for e in events if e.occurred_at >= oldest}
        await self.partitions.ensure(conn, days)

    async def upkeep(self, conn: Conn) -> None:
        """Today and the next days made; days wholly past retention dropped."""
        today = utc_now().date()
        await self.partitions.ensure(conn, days_between(today, today + timedelta(DAYS_AHEAD)))
        await self.partitions.drop_before(conn, self.oldest_kept().date())

    async def apply(self, conn: Conn, events: list[UsageRecorded]) -> None:
        """Add fresh (already deduplicated) events to the ledger, inside the batch transaction."""
        await repository.add_usage(conn, minute_deltas(events), minutes_from=self.oldest_kept())


def usage_consumer(
    settings: MeteringSettings, pool: asyncpg.Pool, client_id: str
) -> LedgerConsumer[UsageRecorded]:
    """The metering group's consumer of usage.events."""
    days = MinuteDays(settings.minute_retention_days)
    return LedgerConsumer(
        settings.consumer_config(client_id),
        pool,
        parse_usage,
        days.apply,
        before_batch=days.before_batch,
        upkeep=days.upkeep,
    )
