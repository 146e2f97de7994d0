"""The policy counters' rules, on real Redis with the clock in the test's hands, and the
pure parts (durations, periods, the output a request asks for)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.gateway.policies.counters import (
    ADMITTED,
    NEEDS_SEED,
    OVER_BUDGET,
    OVER_RATE,
    TOO_LARGE,
    RedisCounters,
)
from services.gateway.policies.headers import duration
from services.gateway.policies.plan import Plan, Planner, to_nano, window
from shared.policy import Budget, RateLimits
from tests.gateway.harness import new_key

T0 = 1_800_000_000_000  # a whole second, in ms


def _plan(prefix: str, **policy: Any) -> Plan:
    _, state = new_key(**policy)
    return Planner(prefix).plan(state, None, None, 0, datetime.now(UTC))


async def test_a_limit_of_n_admits_n_at_once_and_at_most_n_in_any_60_seconds(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    counters = RedisCounters(redis_client)
    plan = _plan(redis_prefix, rate_limits=RateLimits(requests_per_minute=5))
    burst = [await counters.admit(plan, f"r{i}", 1000, T0) for i in range(6)]
    assert [v.outcome for v in burst] == [ADMITTED] * 5 + [OVER_RATE]
    assert [v.rates[0].remaining for v in burst[:5]] == [4, 3, 2, 1, 0]
    assert burst[5].retry_ms == 61_000  # the burst's second leaves the window then
    assert (await counters.admit(plan, "x", 1000, T0 + 60_999)).outcome == OVER_RATE
    assert (await counters.admit(plan, "y", 1000, T0 + 61_000)).outcome == ADMITTED

    # Random arrivals over four minutes: no 60 s span ever holds more than 5 admissions.
    other = _plan(redis_prefix, rate_limits=RateLimits(requests_per_minute=5))
    rng = random.Random(7)
    moments = sorted(T0 + rng.randrange(240_000) for _ in range(300))
    admitted = [
        t
        for i, t in enumerate(moments)
        if (await counters.admit(other, f"a{i}", 1000, t)).outcome == ADMITTED
    ]
    assert len(admitted) >= 12  # the allowance is used, not only held back
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t - start < 60_000) <= 5


async def test_an_admission_is_all_or_nothing(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    counters = RedisCounters(redis_client)
    plan = _plan(
        redis_prefix,
        rate_limits=RateLimits(requests_per_minute=10),
        project_rate_limits=RateLimits(requests_per_minute=1),
    )
    assert (await counters.admit(plan, "a", 1000, T0)).outcome == ADMITTED
    refused = await counters.admit(plan, "b", 1000, T0)
    assert (refused.outcome, refused.which) == (OVER_RATE, 1)  # the project's limit
    # The key's own window did not count the refused request.
    assert refused.rates[0].remaining == 9


async def test_a_request_larger_than_the_whole_limit_is_refused_for_good(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    counters = RedisCounters(redis_client)
    _, state = new_key(rate_limits=RateLimits(tokens_per_minute=100))
    plan = Planner(redis_prefix).plan(state, None, 200, 40, datetime.now(UTC))
    assert plan.token_estimate == 210
    assert (await counters.admit(plan, "a", 1000, T0)).outcome == TOO_LARGE


async def test_budgets_need_a_seed_then_reserve_and_release_with_leases(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    counters = RedisCounters(redis_client)
    plan = _plan(redis_prefix, budget=Budget(limit_usd=Decimal("0.000003"), period="total"))
    budget = plan.budgets[0]
    assert budget.limit == 3000
    assert (await counters.admit(plan, "a", 1000, T0)).outcome == NEEDS_SEED
    assert await counters.seed(budget, 1000, from_ledger=True) == 1000
    # A lower figure later never lowers the spend.
    assert await counters.seed(budget, 10, from_ledger=True) == 1000
    # Without a model the plan reserves nothing: give each request a worst case of 1,500.
    plan = replace(plan, budgets=(replace(budget, amount=1500),))
    assert (await counters.admit(plan, "a", 1000, T0)).outcome == ADMITTED
    over = await counters.admit(plan, "b", 1000, T0)
    assert over.outcome == OVER_BUDGET
    assert (over.budgets[0].spent, over.budgets[0].reserved) == (1000, 1500)
    # The first gateway died before settling: its lease runs out and the budget is free again.
    assert (await counters.admit(plan, "c", 1000, T0 + 1001)).outcome == ADMITTED
    await counters.settle([(plan, "c", (T0 + 1001) // 1000, 0, 400)])
    _, spend = await counters.peek(plan, T0 + 1002)
    assert spend == [(1400, 0)]


@pytest.mark.unit
def test_durations_are_written_as_openai_writes_them() -> None:
    assert [duration(ms) for ms in (0, 20, 999, 1000, 1001, 59_000, 60_000, 61_000, 360_000)] == [
        "0s",
        "20ms",
        "999ms",
        "1s",
        "2s",
        "59s",
        "1m0s",
        "1m1s",
        "6m0s",
    ]
    assert duration(3_723_000) == "1h2m3s"


@pytest.mark.unit
def test_periods_are_utc_days_and_calendar_months() -> None:
    late = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    day, month, total = window("day", late), window("month", late), window("total", late)
    assert day.period_id == "d20261231"
    assert day.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert month.period_id == "m202612"
    assert month.since == datetime(2026, 12, 1, tzinfo=UTC)
    assert month.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert (total.since_unix, total.resets_at, total.ttl_ms(late)) == (0, None, 0)
    assert window("month", datetime(2026, 2, 10, tzinfo=UTC)).resets_at == datetime(
        2026, 3, 1, tzinfo=UTC
    )


@pytest.mark.unit
def test_nano_dollars_round_up() -> None:
    assert to_nano(Decimal("0.0000000001")) == 1  # a fraction of a nano-dollar counts whole


async def test_the_counters_reload_their_scripts_after_redis_lost_them(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    counters = RedisCounters(redis_client)
    plan = _plan(redis_prefix, rate_limits=RateLimits(tokens_per_minute=100))
    assert (await counters.admit(plan, "a", 1000, T0)).outcome == ADMITTED
    await redis_client.script_flush()  # what a Redis restart does to the script cache
    await counters.settle([(plan, "a", T0 // 1000, 7, 0)])
    rates, _ = await counters.peek(plan, T0)
    assert rates == [(7, 61_000)], "settled once, not twice"
    await redis_client.script_flush()
    assert (await counters.admit(plan, "b", 1000, T0)).outcome == ADMITTED
