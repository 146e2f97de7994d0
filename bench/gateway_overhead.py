"""What the gateway adds to every call, against an upstream and a load generator faster than it.

Starts a raw-ASGI upstream (bench/lib/raw_upstream.py: uvicorn, httptools, uvloop, canned
answers with usage) and a gateway run as ``make up`` runs it, on the local stack's Kafka and
Redis (or the TOLLGATE_TEST_* servers), with a key and topic prefix of its own. The load comes
from this process: aiohttp on uvloop, N clients over keep-alive connections. For each level of
clients and each mode (chat, stream, embed) rounds alternate direct, gateway, direct, gateway,
... so that a change in the machine's load hits both sides alike. CPU time of each process is
read from /proc before and after every round. Figures, not assertions: all three processes
share this machine's cores.

    uv run --frozen python bench/gateway_overhead.py [--levels 1,50,500] [--modes chat,stream,embed]
        [--rounds 3] [--requests 1000 | --requests 1=2000,50=2000,500=1000 | --duration 5]
        [--json PATH] [--profile PATH --profile-levels 1,50 --profile-mode chat] [--no-policy]

A third arm runs in every round unless ``--no-policy``: the same gateway called with a key that has
rate limits (key and project) and a budget, all checked on every request and never reached,
so the difference in gateway CPU per request is what the policy check costs; the Redis
commands it sends per request are counted from Redis's own command statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop

from bench.lib import procstat, profile, report, servers
from bench.lib.loadgen import MODES, Load, Round

HIGH_LOAD = 0.5  # warn above this load average per core


def requests_per_level(spec: str) -> dict[int, int]:
    """``1000`` (every level) or ``1=2000,50=2000,500=1000``; key 0 is the default."""
    if "=" not in spec:
        return {0: int(spec)}
    pairs = (item.split("=") for item in spec.split(","))
    return {int(level): int(count) for level, count in pairs}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--levels", default="1,50,500", help="concurrent clients, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help="chat, stream, embed")
    parser.add_argument("--rounds", type=int, default=3, help="direct/gateway pairs per level")
    parser.add_argument("--requests", default="1=400,50=3000,500=3000", help="per round")
    parser.add_argument("--duration", type=float, help="seconds per round instead of requests")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="the gateway on the secured engines (TLS and SASL to Kafka, TLS and an ACL user "
        "to Redis: deploy/secure.py)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy folded stacks of the gateway here")
    parser.add_argument("--profile-levels", default="1", help="clients of the profiled rounds")
    parser.add_argument("--profile-mode", default="chat", choices=MODES)
    parser.add_argument(
        "--profile-target",
        default="gateway",
        choices=("gateway", "policy"),
        help="profile calls with the plain key or with the policy key",
    )
    parser.add_argument("--profile-requests", type=int, default=4000, help="profiled round")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per s")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile summary")
    parser.add_argument(
        "--policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a key with rate limits and a budget (--no-policy: not)",
    )
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    args.requests = requests_per_level(args.requests)
    args.profile_levels = [int(x) for x in args.profile_levels.split(",") if x]
    return args


def cpu_now(srv: servers.Servers) -> dict[str, float]:
    return {
        "upstream": procstat.cpu_seconds(srv.upstream.pid),
        "gateway": procstat.cpu_seconds(srv.gateway.pid),
        "loadgen": procstat.cpu_seconds(os.getpid(), descendants=False),
    }


async def one_round(
    srv: servers.Servers,
    target: str,
    *,
    mode: str,
    clients: int,
    count: int | None,
    duration: float | None,
) -> tuple[Round, dict[str, float], Round]:
    """One measured round, after a warm-up that opens the clients' connections."""
    url, headers = {
        "direct": (srv.upstream_url, {}),
        "gateway": (srv.gateway_url, srv.headers),
        "policy": (srv.gateway_url, srv.policy_headers),
    }[target]
    async with Load(url, mode, clients, headers) as load:
        warm = await load.warm()
        before = cpu_now(srv)
        measured = await load.run(requests=count, duration=duration)
        after = cpu_now(srv)
    return measured, {name: after[name] - before[name] for name in before}, warm


async def measure_mode(
    srv: servers.Servers,
    args: argparse.Namespace,
    *,
    clients: int,
    mode: str,
    count: int | None,
    out: dict[str, Any],
) -> dict[str, Any]:
    """Interleaved rounds of one level and mode; its figures (every round also in out)."""
    targets = ("direct", "gateway", "policy") if args.policy else ("direct", "gateway")
    pooled = {target: report.Pooled() for target in targets}
    redis_calls = redis_sent = 0  # the policy arm's Redis commands, and its requests with warm-ups
    for index in range(args.rounds):
        for target in targets:
            calls = await redis_commands(srv) if target == "policy" else 0
            measured, cpu, warm = await one_round(
                srv,
                target,
                mode=mode,
                clients=clients,
                count=count,
                duration=args.duration,
            )
            if target == "policy":
                redis_calls += await redis_commands(srv) - calls
                redis_sent += measured.sent + warm.sent
            pool = pooled[target]
            pool.latencies += measured.latencies
            pool.errors.update(measured.errors)
            pool.elapsed += measured.elapsed
            pool.sent += measured.sent
            pool.rps.append(len(measured.latencies) / measured.elapsed)
            for name, seconds in cpu.items():
                pool.cpu[name] = pool.cpu.get(name, 0.0) + seconds
            out["rounds"].append({
                "clients": clients, "mode": mode, "round": index, "target": target,
                "requests": measured.sent, "ok": len(measured.latencies),
                "elapsed_s": measured.elapsed, "cpu_s": cpu,
                "errors": dict(measured.errors), "warmup_errors": dict(warm.errors),
            })  # fmt: skip
    result = {
        "clients": clients,
        "mode": mode,
        **report.combine(pooled["direct"].figures(), pooled["gateway"].figures()),
    }
    print(report.table([result]).splitlines()[-2], flush=True)
    if args.policy:
        policy = report.policy_cost(
            pooled["gateway"].figures(),
            pooled["policy"].figures(),
            redis_calls / max(redis_sent, 1),
        )
        result["policy"] = policy
        print(report.policy_line(clients, mode, policy), flush=True)
    return result


async def redis_commands(srv: servers.Servers) -> int:
    """Script calls Redis has taken so far (EVALSHA, EVAL, SCRIPT: what clients send, not the
    commands a script runs inside), from INFO commandstats, to count them per request."""
    client = aioredis.Redis.from_url(srv.endpoints.redis_url, **srv.redis_options)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_script")
    return sum(int(stats[name]["calls"]) for name in calls if name in stats)


def profile_path(base: Path, clients: int, many: bool) -> Path:
    return base.with_name(f"{base.stem}-{clients}clients{base.suffix}") if many else base


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load1, load5, load15 = procstat.load_average()
    cores = os.cpu_count() or 1
    print(f"gateway overhead on {cores} CPUs; load average {load1:.2f} {load5:.2f} {load15:.2f}")
    if load1 > HIGH_LOAD * cores:
        print(f"WARNING: load average {load1:.2f} is high for {cores} cores: figures will be noisy")
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    srv = await servers.start(work, secure=args.secure)
    out: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": cores,
        "load_average_start": [load1, load5, load15],
        "config": {
            "levels": args.levels,
            "modes": args.modes,
            "rounds": args.rounds,
            "requests": args.requests,
            "duration": args.duration,
        },
        "rounds": [],
        "results": [],
        "profiles": [],
    }
    try:
        for clients in args.levels:
            count = (
                None if args.duration else args.requests.get(clients, args.requests.get(0, 1000))
            )
            level_results = [
                await measure_mode(srv, args, clients=clients, mode=mode, count=count, out=out)
                for mode in args.modes
            ]
            rss = procstat.rss_bytes(srv.gateway.pid) / 2**20
            for result in level_results:
                result["gateway_rss_mb"] = rss
            out["results"] += level_results
        many = len(args.profile_levels) > 1
        for clients in args.profile_levels if args.profile else []:
            path = profile_path(args.profile, clients, many)
            count = args.profile_requests
            recorder = profile.Recorder(srv.gateway.pid, path, args.profile_rate)
            recorder.start()
            await asyncio.sleep(1.0)  # py-spy attaches
            measured, _cpu, _ = await one_round(
                srv,
                args.profile_target,
                mode=args.profile_mode,
                clients=clients,
                count=count,
                duration=args.duration,
            )
            top = recorder.stop()
            rps = len(measured.latencies) / measured.elapsed
            print(f"\nprofile of the gateway, {clients} clients, {args.profile_mode}: {path}")
            print(f"  (profiled round: {rps:.0f} req/s, not counted in the figures)")
            print(profile.table(top, args.top))
            out["profiles"].append({
                "clients": clients, "mode": args.profile_mode, "path": str(path),
                "samples": top.samples, "own": top.own, "total": top.total,
            })  # fmt: skip
    finally:
        srv.stop()
        if not srv.secure:  # the secured engines' topics are the real ones: kept
            await servers.delete_topics(srv.endpoints.kafka_bootstrap, srv.prefix)
    out["load_average_end"] = list(procstat.load_average())
    return out


def _finite(value: Any) -> Any:
    """NaN (no samples) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    args = parse_args()
    out = uvloop.run(run(args))
    print()
    print(report.table(out["results"]))
    end = out["load_average_end"]
    print(f"load average at the end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(_finite(out), indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
