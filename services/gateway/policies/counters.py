"""The shared counters in Redis: admit, settle, seed and peek, one script call each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from services.gateway.policies.plan import BudgetCheck, Plan, RateCheck
from services.gateway.policies.scripts import ADMIT, PEEK, SEED, SETTLE
from shared.redis_client import Call, LuaScript, RedisClient

ADMITTED, OVER_RATE, OVER_BUDGET, NEEDS_SEED, TOO_LARGE = range(5)


@dataclass(frozen=True, slots=True)
class RateState:
    """A rate limit after a request: what remains, and when it is whole again."""

    check: RateCheck
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget when a request was checked: settled spend and what is reserved."""

    check: BudgetCheck
    spent: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The admit script's answer."""

    outcome: int
    which: int  # the index (from 0) of the limit or budget that refused
    retry_ms: int
    second: int
    rates: tuple[RateState, ...]
    budgets: tuple[BudgetState, ...]


class RedisCounters:
    """Rate windows and budgets of every replica, in Redis."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._admit_script = LuaScript(ADMIT)
        self._settle_script = LuaScript(SETTLE)
        self._seed_script = LuaScript(SEED)
        self._peek_script = LuaScript(PEEK)

    async def load_scripts(self) -> None:
        """Load the scripts into Redis (every primary of a cluster) before the first request
        needs them: a burst that finds them missing pays a load each, and the cluster
        client's slot map, against the request path's short timeout."""
        for script in (
            self._admit_script,
            self._settle_script,
            self._seed_script,
            self._peek_script,
        ):
            await self.client.script_load(script.source)

    async def admit(
        self, plan: Plan, reservation: str, lease_ms: int, now_ms: int | None = None
    ) -> Verdict:
        """Admit the request against all its checks at once, or refuse it (nothing counted)."""
        keys: list[str] = [r.redis_key for r in plan.rates]
        args: list[str | int] = [
            "" if now_ms is None else now_ms,
            len(plan.rates),
            len(plan.budgets),
            reservation,
            lease_ms,
        ]
        for rate in plan.rates:
            args += [rate.limit, rate.amount]
        for budget in plan.budgets:
            keys += [budget.redis_key, budget.reservations_key]
            args += [budget.limit, budget.amount, budget.ttl_ms]
        raw = cast("list[int]", await self._admit_script(self.client, keys, args))
        at = 4
        rates = []
        for rate in plan.rates:
            rates.append(RateState(rate, int(raw[at + 1]), int(raw[at + 2])))
            at += 3
        budgets = []
        for budget in plan.budgets:
            budgets.append(BudgetState(budget, int(raw[at + 1]), int(raw[at + 2])))
            at += 3
        return Verdict(
            int(raw[0]), int(raw[1]) - 1, int(raw[2]), int(raw[3]), tuple(rates), tuple(budgets)
        )

    async def settle(
        self,
        items: Sequence[tuple[Plan, str, int, int, int]],
    ) -> None:
        """Settle many requests in one pipeline: (plan, reservation, second, real tokens,
        real cost in nano-dollars) each. Only the calls Redis refused for want of the script
        are sent again (after loading it): a settlement is never applied twice."""
        calls: list[Call] = []
        for plan, reservation, second, tokens, cost in items:
            token_rates = [r for r in plan.rates if r.kind == "tokens"]
            keys = [r.redis_key for r in token_rates]
            args: list[str | int] = [len(token_rates), len(plan.budgets), second, reservation]
            args += [tokens - r.amount for r in token_rates]
            for budget in plan.budgets:
                keys += [budget.redis_key, budget.reservations_key]
                args += [cost, budget.ttl_ms]
            calls.append((keys, args))
        await self._settle_script.run_many(self.client, calls)

    async def seed(self, budget: BudgetCheck, known: int, *, from_ledger: bool) -> int:
        """Raise a budget's spend to what is known elsewhere; answers the spend held."""
        held = await self._seed_script(
            self.client, [budget.redis_key], [known, 1 if from_ledger else 2, budget.ttl_ms]
        )
        return int(cast("int", held))

    async def peek(
        self, plan: Plan, now_ms: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Each rate's (used, reset_ms) and each budget's (spent, reserved), changing nothing."""
        keys = [r.redis_key for r in plan.rates] + [b.redis_key for b in plan.budgets]
        args: list[str | int] = ["" if now_ms is None else now_ms, len(plan.rates)]
        args.append(len(plan.budgets))
        raw = [int(v) for v in cast("list[int]", await self._peek_script(self.client, keys, args))]
        split = 2 * len(plan.rates)
        rates = [(raw[i], raw[i + 1]) for i in range(0, split, 2)]
        budgets = [(raw[i], raw[i + 1]) for i in range(split, len(raw), 2)]
        return rates, budgets
