"""Billing's consumer wiring: usage.events priced into the day cost ledger, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from services.billing import repository
from services.billing.service import PricedUsage, Pricer, cost_deltas
from services.billing.settings import BillingSettings
from shared.catalogue import Catalogue
from shared.exactly_once import LedgerConsumer

if TYPE_CHECKING:
    from shared.exactly_once import Conn


async def apply_costs(conn: Conn, events: list[PricedUsage]) -> None:
    """Add fresh (already deduplicated) priced events to the ledger, in the batch transaction."""
    await repository.add_costs(conn, cost_deltas(events))


def cost_consumer(
    settings: BillingSettings, pool: asyncpg.Pool, catalogue: Catalogue, client_id: str
) -> LedgerConsumer[PricedUsage]:
    """The billing group's consumer of usage.events."""
    return LedgerConsumer(settings.consumer_config(client_id), pool, Pricer(catalogue), apply_costs)
