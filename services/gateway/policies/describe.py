"""``GET /v1/key``: what a key's holder may know of their own key (as OpenRouter's
``GET /api/v1/key``): its limits with what remains now, its budget with what is spent."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from services.gateway.policies.headers import duration
from services.gateway.policies.plan import BudgetCheck, RateCheck, from_nano
from services.gateway.policies.spend import SpendUnavailable
from shared.events import KeyState
from shared.policy import Budget, RateLimits
from shared.redis_client import REDIS_ERRORS

if TYPE_CHECKING:
    from services.gateway.policies.gate import PolicyGate

log = logging.getLogger(__name__)


def _money(amount: Decimal) -> str:
    """Dollars to the nano-dollar the counters hold, without trailing zeros."""
    text = format(amount.quantize(Decimal("1e-9")).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _rates(
    limits: RateLimits | None, checks: list[RateCheck], used: list[tuple[int, int]]
) -> dict[str, Any] | None:
    if limits is None:
        return None
    body: dict[str, Any] = limits.model_dump()
    for check, (count, reset_ms) in zip(checks, used, strict=True):
        body[f"remaining_{check.kind}"] = max(0, check.limit - count)
        body[f"reset_{check.kind}"] = duration(reset_ms)
    return body


def _budget(budget: Budget | None, check: BudgetCheck | None, spent: int, held: int) -> Any:
    if budget is None or check is None:
        return None
    limit = budget.limit_usd
    spent_usd = from_nano(spent)
    return {
        "limit_usd": format(limit, "f"),
        "period": budget.period,
        "spent_usd": _money(spent_usd),
        "reserved_usd": _money(from_nano(held)),
        "remaining_usd": _money(max(Decimal(0), limit - spent_usd - from_nano(held))),
        "resets_at": _unix(check.window.resets_at),
    }


async def describe_key(gate: PolicyGate, key: KeyState) -> dict[str, Any]:
    """The key's own view of itself; counts from Redis, or this replica's when it is away."""
    plan = gate.planner.plan(key, None, None, 0, datetime.now(UTC))
    used = [(0, 0)] * len(plan.rates)
    spend = [(gate.local.known.get(b.redis_key, 0), 0) for b in plan.budgets]
    if plan.rates or plan.budgets:
        try:
            used, spend = await asyncio.wait_for(gate.counters.peek(plan), gate.timeout_s)
        except REDIS_ERRORS as exc:
            log.warning("key limits read from this replica only: %s", type(exc).__name__)
    spend = [
        (max(s, await _ledger(gate, b)), h) for b, (s, h) in zip(plan.budgets, spend, strict=True)
    ]
    of_key = [i for i, r in enumerate(plan.rates) if r.holder == "key"]
    of_project = [i for i, r in enumerate(plan.rates) if r.holder == "project"]
    budgets = {b.holder: (b, s, h) for b, (s, h) in zip(plan.budgets, spend, strict=True)}
    key_budget = budgets.get("key", (None, 0, 0))
    project_budget = budgets.get("project", (None, 0, 0))
    return {
        "object": "api_key",
        "id": key.key_id,
        "project_id": key.project_id,
        "name": key.name,
        "hint": key.hint,
        "rate_limits": _rates(
            key.rate_limits, [plan.rates[i] for i in of_key], [used[i] for i in of_key]
        ),
        "project_rate_limits": _rates(
            key.project_rate_limits,
            [plan.rates[i] for i in of_project],
            [used[i] for i in of_project],
        ),
        "budget": _budget(key.budget, *key_budget),
        "project_budget": _budget(key.project_budget, *project_budget),
        "allowed_models": list(key.allowed_models) if key.allowed_models is not None else None,
        "allowed_endpoints": (
            list(key.allowed_endpoints) if key.allowed_endpoints is not None else None
        ),
        "expires_at": _unix(key.expires_at),
    }


async def _ledger(gate: PolicyGate, budget: BudgetCheck) -> int:
    """The ledger's figure (what Redis may not hold yet), or the last one read."""
    try:
        return await asyncio.wait_for(gate.ledger.known(budget), 2.0)
    except (SpendUnavailable, TimeoutError):
        return gate.ledger.last_known.get(budget.redis_key, 0)
