"""Spend against budgets, read from billing's Costs API, for the keys and usage pages.

A budget's period is the gateway's: the UTC day, the UTC calendar month, or all time. Day
and month spend come from one Costs API read from the start of the month, grouped by
``api_key_id`` (a day's spend is that day's bucket); a total budget's spend from the exact
total since time 0 (``/costs/total``, one query however old the key), so a page never walks
decades of daily buckets. Amounts are summed as Decimal. When billing cannot answer, the
statuses carry no spend and the page says so instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.console.clients import ApiProblem, CostsApi
from services.console.usage import amount

PERIOD_WORDS = {"day": "today", "month": "this month", "total": "in total"}
PROJECT = ""  # the project's own budget, beside its keys' ids


def period_start(period: str, now: datetime) -> datetime:
    """The first moment of the budget period that holds now (UTC)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "month":
        return midnight.replace(day=1)
    return datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class BudgetStatus:
    """One budget and what was spent against it in its current period (None: unknown)."""

    limit: Decimal
    period: str
    spent: Decimal | None

    @property
    def words(self) -> str:
        return PERIOD_WORDS.get(self.period, self.period)

    @property
    def over(self) -> bool:
        return self.spent is not None and self.spent >= self.limit

    @property
    def meter_value(self) -> Decimal:
        """The spend, capped at the limit (a meter cannot show more than full)."""
        return min(self.spent or Decimal(0), self.limit)


@dataclass
class Budgets:
    """Each key's budget status by key id, and the project's (``PROJECT``)."""

    statuses: dict[str, BudgetStatus] = field(default_factory=dict)
    unavailable: str | None = None

    def of(self, key_id: str) -> BudgetStatus | None:
        return self.statuses.get(key_id)

    @property
    def project(self) -> BudgetStatus | None:
        return self.statuses.get(PROJECT)


def _limit(budget: Mapping[str, Any]) -> Decimal:
    return Decimal(str(budget["limit_usd"]))


async def _day_and_month(
    costs: CostsApi, project_id: str, now: datetime
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Spend today and this month, per key and for the project (``PROJECT``)."""
    month, day = period_start("month", now), int(period_start("day", now).timestamp())
    query = [
        ("start_time", str(int(month.timestamp()))),
        ("bucket_width", "1d"),
        ("limit", "31"),
        ("group_by", "api_key_id"),
    ]
    by_day: dict[str, Decimal] = {PROJECT: Decimal(0)}
    by_month: dict[str, Decimal] = {PROJECT: Decimal(0)}
    for bucket in await costs.costs(project_id, query):
        today = int(bucket["start_time"]) >= day
        for result in bucket.get("results", []):
            value, key = amount(result), result.get("api_key_id") or PROJECT
            for sums, counts in ((by_month, True), (by_day, today)):
                if counts:
                    sums[PROJECT] += value
                    if key != PROJECT:
                        sums[key] = sums.get(key, Decimal(0)) + value
    return by_day, by_month


async def _total(costs: CostsApi, project_id: str, key_id: str) -> Decimal:
    query = [("start_time", "0"), *([("api_key_ids", key_id)] if key_id != PROJECT else [])]
    return amount(await costs.total(project_id, query))


async def read_budgets(
    costs: CostsApi,
    project_id: str,
    budgets: Mapping[str, Mapping[str, Any] | None],
    *,
    now: datetime | None = None,
    spend: bool = True,
) -> Budgets:
    """The status of every budget given (by key id, ``PROJECT`` for the project's); with
    ``spend`` false (a session without ``costs:read``) the limits alone, billing not asked."""
    wanted = {ident: budget for ident, budget in budgets.items() if budget}
    if not wanted:
        return Budgets()
    if not spend:
        return Budgets({i: BudgetStatus(_limit(b), b["period"], None) for i, b in wanted.items()})
    now = now or datetime.now(UTC)
    totals = [ident for ident, budget in wanted.items() if budget["period"] == "total"]
    needs_month = any(budget["period"] != "total" for budget in wanted.values())
    try:
        spent_totals = await asyncio.gather(*(_total(costs, project_id, i) for i in totals))
        by_day, by_month = await _day_and_month(costs, project_id, now) if needs_month else ({}, {})
    except ApiProblem as exc:
        statuses = {i: BudgetStatus(_limit(b), b["period"], None) for i, b in wanted.items()}
        return Budgets(statuses, unavailable=exc.message)
    by_total = dict(zip(totals, spent_totals, strict=True))
    spent = {"day": by_day, "month": by_month, "total": by_total}
    return Budgets(
        {
            ident: BudgetStatus(
                _limit(budget),
                budget["period"],
                spent[budget["period"]].get(ident, Decimal(0)),
            )
            for ident, budget in wanted.items()
        }
    )
