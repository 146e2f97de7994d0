"""Metering's consumer wiring: usage.events into the minute ledger, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from services.metering import repository
from services.metering.service import minute_deltas
from services.metering.settings import MeteringSettings
from shared.events import UsageRecorded
from shared.exactly_once import LedgerConsumer, parse_usage

if TYPE_CHECKING:
    from shared.exactly_once import Conn


async def apply_usage(conn: Conn, events: list[UsageRecorded]) -> None:
    """Add fresh (already deduplicated) events to the ledger, inside the batch transaction."""
    await repository.add_usage(conn, minute_deltas(events))


def usage_consumer(
    settings: MeteringSettings, pool: asyncpg.Pool, client_id: str
) -> LedgerConsumer[UsageRecorded]:
    """The metering group's consumer of usage.events."""
    return LedgerConsumer(settings.consumer_config(client_id), pool, parse_usage, apply_usage)
