"""What a policy check costs Redis: the sliding-window admit script against a GCRA one.

The gateway's admit script (services/gateway/policies/scripts.py) keeps each rate limit as a
sliding window of one-second buckets, so that a limit of N admits at most N in any 60 s. GCRA
(one timestamp per limit) is the usual cheaper choice, but lets a burst of N be followed by N
more as it refills. This measures both on the same Redis, with the same three limits (key rpm,
key tpm, project rpm), at a steady rate that fills the window: Redis's own CPU per call (INFO
commandstats) and the client's round trip. With ``--budget`` the sliding-window calls also
carry a budget reservation, as the gateway's do for a key with a budget.

    uv run --frozen python bench/policy_scripts.py [--calls 20000] [--budget]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
import uvloop

from bench.lib.servers import stack_endpoints
from services.gateway.policies.counters import RedisCounters
from services.gateway.policies.plan import Planner
from shared.events import KeyState
from shared.policy import Budget, RateLimits

# A GCRA admit over n limits, all or nothing: KEYS = one per limit;
# ARGV = now_ms, then per limit (emission interval ms, burst tolerance ms, cost).
GCRA = """
local now = tonumber(ARGV[1])
local new = {}
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval * cost
  if next_tat - now > burst then return {0, i, next_tat - now - burst} end
  new[i] = next_tat
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], new[i], 'PX', 60000) end
return {1, 0, 0}
"""


async def script_stats(client: aioredis.Redis) -> tuple[int, int]:
    """Calls and microseconds Redis has spent in EVALSHA so far."""
    stats: dict[str, Any] = await client.info("commandstats")
    row = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(row["calls"]), int(row["usec"])


async def measure(name: str, client: aioredis.Redis, call: Any, calls: int) -> dict[str, float]:
    before = await script_stats(client)
    started = time.perf_counter()
    for i in range(calls):
        await call(i)
    elapsed = time.perf_counter() - started
    after = await script_stats(client)
    done = after[0] - before[0]
    usec = (after[1] - before[1]) / max(done, 1)
    figures = {"redis_us_per_call": usec, "round_trip_us": 1e6 * elapsed / calls}
    print(
        f"{name:<36} Redis {usec:5.1f} us/call, client round trip {1e6 * elapsed / calls:6.1f} us"
    )
    return figures


async def run(args: argparse.Namespace) -> None:
    client = aioredis.Redis.from_url(stack_endpoints().redis_url)
    prefix = f"bench-policy-{uuid.uuid4().hex[:8]}:"
    state = KeyState(
        key_id="key_bench", project_id="proj_bench", name="bench", hint="sk-...abcd",
        key_hash="0" * 64, version=1,
        rate_limits=RateLimits(requests_per_minute=10**6, tokens_per_minute=10**9),
        project_rate_limits=RateLimits(requests_per_minute=10**6),
        budget=Budget(limit_usd=Decimal(10**6), period="month") if args.budget else None,
    )  # fmt: skip
    plan = Planner(prefix).plan(state, None, 16, 120, datetime.now(UTC))
    counters = RedisCounters(client)
    gcra = client.register_script(GCRA)
    keys = [f"{prefix}gcra:{{proj_bench}}:{k}" for k in ("kr", "kt", "pr")]
    # Steady arrivals 3 ms apart in the scripts' own clock: 20,000 calls fill a whole window.
    t0 = int(time.time() * 1000)

    async def sliding(i: int) -> None:
        await counters.admit(plan, f"r{i}", 60_000, t0 + 3 * i)

    async def gcra_call(i: int) -> None:
        args_: list[float] = [t0 + 3 * i]
        for limit, cost in ((10**6, 1), (10**9, 46), (10**6, 1)):
            interval = 60_000 / limit
            args_ += [interval, 60_000 - interval, cost]
        await gcra(keys=keys, args=args_)

    try:
        for _ in range(2):  # interleaved, twice
            await measure("GCRA (3 limits)", client, gcra_call, args.calls)
            label = "sliding window (3 limits" + (" + budget)" if args.budget else ")")
            await measure(label, client, sliding, args.calls)
    finally:
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--budget", action="store_true")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
