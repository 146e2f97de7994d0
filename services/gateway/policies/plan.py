"""What one request must pass: the limits and budgets of its key and project, as counters.

Pure: from the key's state, the model and the request's size to the Redis names and amounts
the admit script takes. A request is admitted on estimates, settled with its real usage:

- tokens per minute: the prompt's estimate (a token per 4 bytes of the body) plus the output
  it asks for (its output limit times its choices, as ``request/fields.py`` reads them);
- budget: its worst case, every byte of the body as an input token (a token is at least one
  byte) plus the most output it may get (its output limit times its choices, or the model's
  ``max_output_tokens`` when the client set none), priced with the catalogue's price in force.

The output limit is the one the upstream is sent (``request/fields.py`` ``forwarded``), so it is the
most the upstream may produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from shared.catalogue import ModelEntry
from shared.events import KeyState
from shared.policy import Budget, Period, RateLimits
from shared.pricing import EXACT, request_cost

NANO = Decimal(1_000_000_000)
Kind = Literal["requests", "tokens"]
Holder = Literal["key", "project"]


# Budget periods: UTC day, UTC calendar month, or all time.
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Window:
    """One period of a budget: its counter's id, where it starts and when it resets."""

    period_id: str
    since: datetime
    resets_at: datetime | None  # None: never (a total budget)

    @property
    def since_unix(self) -> int:
        return int(self.since.timestamp())

    def ended(self, now: datetime) -> bool:
        return self.resets_at is not None and self.resets_at <= now

    def ttl_ms(self, now: datetime) -> int:
        """How long its counter must live: a day past its reset (0: for ever)."""
        if self.resets_at is None:
            return 0
        return int((self.resets_at - now).total_seconds() * 1000) + _DAY_MS


def window(period: Period, now: datetime) -> Window:
    """The period of ``period`` that holds ``now``."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(f"d{start:%Y%m%d}", start, start + timedelta(days=1))
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).replace(day=1)
        return Window(f"m{start:%Y%m}", start, following)
    return Window("total", datetime(1970, 1, 1, tzinfo=UTC), None)


def to_nano(amount: Decimal) -> int:
    """Dollars as whole nano-dollars, rounded up (a budget counts a fraction as a whole)."""
    return math.ceil(EXACT.multiply(amount, NANO))


def from_nano(amount: int) -> Decimal:
    return Decimal(amount) / NANO


@dataclass(frozen=True, slots=True)
class RateCheck:
    redis_key: str
    holder: Holder
    kind: Kind
    limit: int
    amount: int


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    redis_key: str
    reservations_key: str
    holder: Holder
    budget: Budget
    window: Window
    limit: int  # nano-dollars
    amount: int  # nano-dollars reserved
    ttl_ms: int
    project_id: str
    key_id: str | None  # None for the project's budget


@dataclass(frozen=True, slots=True)
class Plan:
    rates: tuple[RateCheck, ...]
    budgets: tuple[BudgetCheck, ...]
    token_estimate: int


class Planner:
    """Turns a key's policy and a request into counters, under one Redis key prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def rate_key(self, project_id: str, holder_id: str, kind: Kind) -> str:
        return f"{self.prefix}rl:{{{project_id}}}:{holder_id}:{kind[0]}"

    def budget_key(self, project_id: str, holder_id: str, period_id: str) -> str:
        return f"{self.prefix}bg:{{{project_id}}}:{holder_id}:{period_id}"

    def plan(
        self,
        key: KeyState,
        entry: ModelEntry | None,
        output: int | None,
        body_bytes: int,
        now: datetime,
    ) -> Plan:
        """The checks of one request (none for a key and project without limits); output is
        the most output tokens it asked for, over all its choices (None: no limit set)."""
        kind_output = 0 if entry is not None and entry.kind == "embedding" else output
        tokens = math.ceil(body_bytes / 4) + (kind_output or 0)
        rates = [
            *self._rates(key.project_id, key.key_id, "key", key.rate_limits, tokens),
            *self._rates(key.project_id, "project", "project", key.project_rate_limits, tokens),
        ]
        budgets: list[BudgetCheck] = []
        if key.budget is not None or key.project_budget is not None:
            worst = self._worst_case(entry, body_bytes, output, now)
            for holder, budget in (("key", key.budget), ("project", key.project_budget)):
                if budget is None:
                    continue
                win = window(budget.period, now)
                holder_id = key.key_id if holder == "key" else "project"
                redis_key = self.budget_key(key.project_id, holder_id, win.period_id)
                budgets.append(
                    BudgetCheck(
                        redis_key=redis_key,
                        reservations_key=redis_key + ":res",
                        holder=holder,  # type: ignore[arg-type]
                        budget=budget,
                        window=win,
                        limit=to_nano(budget.limit_usd),
                        amount=worst,
                        ttl_ms=win.ttl_ms(now),
                        project_id=key.project_id,
                        key_id=key.key_id if holder == "key" else None,
                    )
                )
        return Plan(tuple(rates), tuple(budgets), tokens)

    def _rates(
        self,
        project_id: str,
        holder_id: str,
        holder: Holder,
        limits: RateLimits | None,
        tokens: int,
    ) -> list[RateCheck]:
        if limits is None:
            return []
        # A request counts once against requests per minute, its tokens against tokens.
        counted: tuple[tuple[Kind, int | None, int], ...] = (
            ("requests", limits.requests_per_minute, 1),
            ("tokens", limits.tokens_per_minute, tokens),
        )
        return [
            RateCheck(self.rate_key(project_id, holder_id, kind), holder, kind, limit, amount)
            for kind, limit, amount in counted
            if limit is not None
        ]

    @staticmethod
    def _worst_case(
        entry: ModelEntry | None,
        body_bytes: int,
        output: int | None,
        now: datetime,
    ) -> int:
        """The request's worst-case cost in nano-dollars (0 for a model without a price)."""
        if entry is None:
            return 0
        price = entry.price_at(now)
        if price is None:
            return 0
        out = entry.max_output_tokens if output is None else output
        if entry.kind == "embedding":
            out = 0
        return to_nano(request_cost(price, input_tokens=body_bytes, output_tokens=out))


def settled_cost(
    entry: ModelEntry | None,
    now: datetime,
    *,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
) -> int:
    """What the request really cost, in nano-dollars (rounded up), as billing prices it."""
    if entry is None:
        return 0
    price = entry.price_at(now)
    if price is None or (input_tokens == 0 and output_tokens == 0):
        return 0
    cached = min(cached_input_tokens, input_tokens)
    return to_nano(
        request_cost(
            price,
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            output_tokens=output_tokens,
        )
    )
