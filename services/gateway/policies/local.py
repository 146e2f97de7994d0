"""What a replica counts on its own: always its share of the budgets' spend that Redis has not
taken yet, and, while Redis is away, the whole check.

With Redis away (down, or not answering within the request timeout) a replica admits:
- against each rate limit, its share: the limit divided by the number of gateway replicas
  alive when Redis last answered, rounded up, in its own sliding window;
- against each budget, the spend Redis held for it when it last answered (or, for a budget
  this replica never saw there, the cost ledger's figure it last read) plus what this replica
  has reserved and spent since, which it hands to Redis once Redis answers again.
"""

from __future__ import annotations

import math

from services.gateway.policies.counters import (
    ADMITTED,
    OVER_BUDGET,
    OVER_RATE,
    TOO_LARGE,
    BudgetState,
    RateState,
    Verdict,
)
from services.gateway.policies.plan import Plan

_WINDOW_S = 60
_PRUNE_AT = 50_000


class LocalCounters:
    """In-process sliding windows and budget tallies for one replica."""

    def __init__(self) -> None:
        self.windows: dict[str, dict[int, int]] = {}
        self.known: dict[str, int] = {}  # budget key -> spend and reservations Redis held
        self.reserved: dict[str, dict[str, int]] = {}  # budget key -> reservation -> amount
        self.unflushed: dict[str, int] = {}  # budget key -> spend not yet taken by Redis

    def remember(self, plan: Plan, verdict: Verdict) -> None:
        """What Redis admitted and held: this replica's own admissions go in its windows too
        (a degraded check then counts what it admitted just before), and each budget's spend
        is the base of a degraded check."""
        for state in verdict.budgets:
            self.known[state.check.redis_key] = state.spent + state.reserved
        if verdict.outcome == ADMITTED:
            for rate in plan.rates:
                window = self.windows.setdefault(rate.redis_key, {})
                window[verdict.second] = window.get(verdict.second, 0) + rate.amount

    def admit(
        self, plan: Plan, reservation: str, replicas: int, now_ms: int, ledger: dict[str, int]
    ) -> Verdict:
        """The degraded check: this replica's share of each rate, its view of each budget."""
        second = now_ms // 1000
        shares = [max(1, math.ceil(rate.limit / max(1, replicas))) for rate in plan.rates]
        used = [self._used(rate.redis_key, second) for rate in plan.rates]
        outcome, which, retry_ms = ADMITTED, -1, 0
        for i, rate in enumerate(plan.rates):
            if used[i] + rate.amount > shares[i]:
                if rate.amount > shares[i]:
                    outcome, which = TOO_LARGE, i
                else:
                    outcome, which = OVER_RATE, i
                    retry_ms = self._retry_ms(
                        rate.redis_key, used[i], rate.amount, shares[i], now_ms
                    )
                break
        spent = []
        for j, budget in enumerate(plan.budgets):
            key = budget.redis_key
            base = self.known.get(key, ledger.get(key, 0)) + self.unflushed.get(key, 0)
            held = sum(self.reserved.get(key, {}).values())
            spent.append((base, held))
            if outcome == ADMITTED and base + held + budget.amount > budget.limit:
                outcome, which = OVER_BUDGET, j
        if outcome == ADMITTED:
            for i, rate in enumerate(plan.rates):
                window = self.windows.setdefault(rate.redis_key, {})
                window[second] = window.get(second, 0) + rate.amount
                used[i] += rate.amount
            for budget in plan.budgets:
                if budget.amount:
                    self.reserved.setdefault(budget.redis_key, {})[reservation] = budget.amount
            if len(self.windows) > _PRUNE_AT:
                self._prune(second)
        rates = tuple(
            RateState(rate, max(0, shares[i] - used[i]), 61_000 if used[i] else 0)
            for i, rate in enumerate(plan.rates)
        )
        budgets = tuple(
            BudgetState(b, base, held + (b.amount if outcome == ADMITTED else 0))
            for b, (base, held) in zip(plan.budgets, spent, strict=True)
        )
        return Verdict(outcome, which, retry_ms, second, rates, budgets)

    def release(self, plan: Plan, reservation: str, second: int, token_delta: int) -> None:
        """A locally admitted request ended: its reservations go, its token estimate is
        corrected in this replica's windows."""
        for budget in plan.budgets:
            held = self.reserved.get(budget.redis_key)
            if held is not None:
                held.pop(reservation, None)
                if not held:
                    del self.reserved[budget.redis_key]
        if token_delta:
            for rate in plan.rates:
                window = self.windows.get(rate.redis_key)
                if rate.kind == "tokens" and window is not None and second in window:
                    window[second] = max(0, window[second] + token_delta)

    def owe(self, budget_key: str, amount: int) -> None:
        """Spend Redis has not taken yet (counted here until it has)."""
        if amount:
            self.unflushed[budget_key] = self.unflushed.get(budget_key, 0) + amount

    def paid(self, budget_key: str, amount: int) -> None:
        """Redis took that spend: it is in what Redis will answer from now on."""
        left = self.unflushed.get(budget_key, 0) - amount
        if left > 0:
            self.unflushed[budget_key] = left
        else:
            self.unflushed.pop(budget_key, None)

    def _used(self, key: str, second: int) -> int:
        window = self.windows.get(key)
        if not window:
            return 0
        for old in [s for s in window if s < second - _WINDOW_S]:
            del window[old]
        return sum(window.values())

    def _retry_ms(self, key: str, used: int, amount: int, limit: int, now_ms: int) -> int:
        freed = 0
        for second, count in sorted(self.windows.get(key, {}).items()):
            freed += count
            if used - freed + amount <= limit:
                return (second + _WINDOW_S + 1) * 1000 - now_ms
        return _WINDOW_S * 1000

    def _prune(self, second: int) -> None:
        for key in list(self.windows):
            if self._used(key, second) == 0:
                del self.windows[key]
