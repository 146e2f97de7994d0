"""Billing's logic, free of frameworks: price usage events, sum costs into pages, spend."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from services.billing.money import plain
from shared.catalogue import Catalogue
from shared.errors import BadRequest
from shared.events import UsageRecorded
from shared.exactly_once import Poison, bucket_page, parse_usage
from shared.pricing import EXACT, CostLine, cost, cost_lines
from shared.usage_query import MAX_TIME, UsageQuery

GROUP_FIELDS = ("api_key_id", "model", "line_item", "project_id")
WIDTHS = ("1d",)  # the ledger is per day, as OpenAI's costs API


class PricedUsage(NamedTuple):
    """A usage event with its costs, ready for the ledger."""

    event_id: Any
    occurred_at: datetime
    project_id: str
    key_id: str
    model: str
    lines: tuple[CostLine, ...]


class Pricer:
    """Prices usage events with the catalogue's price in force at each ``occurred_at``."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.models = {m.id: m for m in catalogue.models}
        # Prices whose cost per token the ledger cannot hold exactly are refused at start.
        for entry in catalogue.models:
            for price in entry.prices:
                rates = (price.input_per_million, price.output_per_million)
                for rate in (*rates, price.cached_input_per_million or Decimal(0)):
                    cost(1, rate)

    def __call__(self, value: bytes | None) -> PricedUsage:
        """A priced event from a record's bytes, or Poison saying why it cannot be one."""
        return self.price(parse_usage(value))

    def price(self, event: UsageRecorded) -> PricedUsage:
        """The event's cost lines; Poison for an unknown model or a time before any price."""
        if event.cached_input_tokens > event.input_tokens:
            raise Poison("invalid usage event: cached_input_tokens exceeds input_tokens")
        if event.input_tokens == 0 and event.output_tokens == 0:
            # A request refused before any model ran (unknown model, bad JSON, 413) used no
            # tokens: it costs nothing whatever its model, so it needs no price.
            return PricedUsage(
                event.event_id, event.occurred_at, event.project_id, event.key_id, event.model, ()
            )
        entry = self.models.get(event.model)
        if entry is None:
            raise Poison(f"unknown model {event.model!r}: not in the price book")
        price = entry.price_at(event.occurred_at)
        if price is None:
            raise Poison(
                f"no price for model {event.model!r} in force at {event.occurred_at.isoformat()}"
            )
        lines = cost_lines(
            price,
            input_tokens=event.input_tokens,
            cached_input_tokens=event.cached_input_tokens,
            output_tokens=event.output_tokens,
        )
        return PricedUsage(
            event.event_id, event.occurred_at, event.project_id, event.key_id, event.model, lines
        )


CostKey = tuple[str, date, str, str, str]  # project, day, key, model, line item


def cost_deltas(events: Iterable[PricedUsage]) -> dict[CostKey, tuple[int, Decimal]]:
    """Sum priced events into the UTC day of their ``occurred_at``, per line item.

    Tokens are summed per price first and multiplied once: exact arithmetic makes that
    equal to the sum of each event's cost, at a fraction of the Decimal operations.
    """
    tokens_at: dict[tuple[CostKey, Decimal], int] = {}
    for e in events:
        day = e.occurred_at.astimezone(UTC).date()
        for line in e.lines:
            at = ((e.project_id, day, e.key_id, e.model, line.line_item), line.per_million)
            tokens_at[at] = tokens_at.get(at, 0) + line.tokens
    deltas: dict[CostKey, tuple[int, Decimal]] = {}
    for (key, per_million), tokens in tokens_at.items():
        before, amount = deltas.get(key, (0, Decimal(0)))
        deltas[key] = (before + tokens, EXACT.add(amount, cost(tokens, per_million)))
    return deltas


def costs_page(project_id: str, query: UsageQuery, rows: Sequence[Any]) -> dict[str, Any]:
    """The Costs API's answer: every bucket of the page, exact amounts per result."""

    def result(r: Any) -> dict[str, Any]:
        line = f"{r['model']}, {r['line_item']}" if r["line_item"] is not None else None
        return {
            "object": "organization.costs.result",
            "amount": {"value": r["amount"], "currency": "usd"},
            "line_item": line,
            "project_id": project_id,
            "api_key_id": r["key_id"],
            "model": r["model"],
        }

    return bucket_page(query, rows, result)


DAY_S = 86400
_EPOCH = date(1970, 1, 1)
_DIGITS = re.compile(r"[0-9]{1,12}")


def parse_since(raw: str | None) -> date:
    """The UTC day a spend read starts at: ``since`` must be 0 or a UTC day boundary.

    The ledger is per day, so any other instant would be answered for a moment it does not
    hold; refusing it keeps a caller from mistaking a day's spend for a part of it.
    """
    if raw is None or raw == "":
        raise BadRequest("Missing required parameter: 'since'.", param="since")
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_TIME:
        raise BadRequest(
            f"Invalid 'since': expected Unix seconds from 0 to {MAX_TIME}, got {raw[:40]!r}.",
            param="since",
        )
    since = int(raw)
    if since % DAY_S:
        raise BadRequest(
            f"Invalid 'since': {since} is not the start of a UTC day (a multiple of {DAY_S});"
            f" the ledger is per day.",
            param="since",
        )
    return _EPOCH + timedelta(days=since // DAY_S)


def spend_body(
    project_id: str, since: date, total: Decimal, per_key: dict[str, Decimal], now: datetime
) -> dict[str, Any]:
    """The spend read's answer: exact amounts as decimal strings, never through a float."""
    return {
        "object": "project.spend",
        "project_id": project_id,
        "since": (since - _EPOCH).days * DAY_S,
        "spent_usd": plain(total),
        "keys": {key: plain(amount) for key, amount in sorted(per_key.items())},
        "as_of": int(now.timestamp()),
    }


__all__ = [
    "CostLine",
    "PricedUsage",
    "Pricer",
    "cost_deltas",
    "costs_page",
    "parse_since",
    "spend_body",
]
