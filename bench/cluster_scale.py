"""The scale figure (issue 14, item 6): usage events per second from clients through the
gateways into the metering and billing ledgers, and the gateways' added latency, on the
cluster mode against one node, measured in the same run.

    uv run --frozen python bench/cluster_scale.py [--levels 1,32] [--rounds 2] [--duration 6]
        [--json PATH]

Two systems run side by side, each started as the e2e and cluster tests start theirs
(tests/e2e/system.py: the demo upstream, the key service, gateways, metering and billing under
uvicorn, a key made through the key service):

- ``single``: one gateway, one metering, one billing on the local stack's one Kafka broker and
  one Redis (or the TOLLGATE_TEST_* servers);
- ``cluster``: two gateways, two metering and two billing replicas (each pair one consumer
  group) on three KRaft nodes (topics replicated 3, 2 in sync) and a Redis Cluster of three
  masters with a replica each, the benchmark's own on free ports.

Both use the session's PostgreSQL. At each level of concurrent clients (1: what one call pays;
32: both systems saturated, what they sustain) rounds alternate single, cluster, single, ...
so a change in the machine's load hits both alike. A round is: the clients call the upstream
directly for ``--duration`` seconds, then the gateways (split evenly over them) as long
again, chat completions over keep-alive connections; then the round waits until both ledgers
hold every event of it (rows of their exactly-once tables). Its figures:

- added latency: the gateway's p50 and p99 minus the direct ones at the same client count;
- events/s: the round's metered requests over the time from its first gateway request until
  the slower ledger held the last (the pipeline's rate, the gateways included);
- lag: how long after the last answer the ledgers caught up.

Figures, not assertions: every process shares this machine's cores, and on a small machine
the cluster's extra brokers and replicas compete for the same CPU as the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from bench.lib import procstat
from bench.lib.loadgen import Load, Round
from bench.lib.servers import delete_topics, stack_endpoints
from bench.lib.stats import summary_ms
from deploy.kafka_cluster import KafkaCluster
from deploy.ports import free_port
from deploy.redis_cluster import RedisCluster
from deploy.stack import Endpoints
from deploy.system import replica_name
from shared.kafka import Replication, ensure_topics
from tests.e2e.system import System, start_system

REPLICATION = Replication(3, 2)
ON_CLUSTER = {
    "REDIS_CLUSTER": "true",
    "TOPIC_REPLICATION_FACTOR": str(REPLICATION.factor),
    "TOPIC_MIN_INSYNC_REPLICAS": str(REPLICATION.min_insync),
}
QUIET = {"LOG_LEVEL": "WARNING"}
CATCH_UP_S = 120.0


@dataclass
class Setup:
    """One system under test: its services, its gateways, its key, its ledgers' schemas."""

    name: str
    system: System
    prefix: str
    unique: str
    kafka_bootstrap: str
    gateways: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def schema(self, service: str) -> str:
        return f"e2e_{self.unique}_{service}"


async def make_key(setup: Setup) -> None:
    """A project and a key through the key service; wait until every gateway accepts it."""
    admin = {"Authorization": f"Bearer {setup.system.admin_token}"}
    async with httpx.AsyncClient(base_url=setup.system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "scale"})).json()["id"]
        made = await keys.post(f"/v1/projects/{project}/keys", json={"name": "scale"})
        made.raise_for_status()
    setup.headers = {"Authorization": f"Bearer {made.json()['key']}"}
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(headers=setup.headers, timeout=5) as client:
        for gateway in setup.gateways:
            while (await client.get(f"{gateway}/v1/models")).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{gateway} never accepted the {setup.name} key")
                await asyncio.sleep(0.2)


async def ledger_rows(pool: asyncpg.Pool, setup: Setup) -> int:
    """Events the slower ledger holds (its exactly-once table has a row for each)."""
    counts = [
        int(await pool.fetchval(f'SELECT count(*) FROM "{setup.schema(s)}".processed_events'))
        for s in ("metering", "billing")
    ]
    return min(counts)


async def load(urls: list[str], headers: dict[str, str], clients: int, duration: float) -> Round:
    """``clients`` split over the URLs for ``duration`` seconds; one Round pooled over them."""
    share = [clients // len(urls) + (i < clients % len(urls)) for i in range(len(urls))]
    loads = [Load(url, "chat", n, headers) for url, n in zip(urls, share, strict=True) if n]
    pooled, warm = Round(), Round()
    for one in loads:
        await one.__aenter__()
    try:
        for got in await asyncio.gather(*(one.warm() for one in loads)):
            warm.latencies += got.latencies
            warm.errors.update(got.errors)
        began = time.perf_counter()
        for got in await asyncio.gather(*(one.run(duration=duration) for one in loads)):
            pooled.latencies += got.latencies
            pooled.errors.update(got.errors)
        pooled.elapsed = time.perf_counter() - began
    finally:
        for one in loads:
            await one.__aexit__(None, None, None)
    pooled.errors["warm-up"] = warm.sent  # metered too: counted in the ledger's total
    return pooled


async def one_round(pool: asyncpg.Pool, setup: Setup, clients: int, duration: float) -> None:
    """Direct, then through the gateways, then until the ledgers hold the round's events."""
    direct = await load([setup.system.url("upstream")], {}, clients, duration)
    before = await ledger_rows(pool, setup)
    began = time.perf_counter()
    gateway = await load(setup.gateways, setup.headers, clients, duration)
    answered = time.perf_counter()
    metered = gateway.sent  # every answer was authenticated: each one is a usage event
    deadline = answered + CATCH_UP_S
    while (held := await ledger_rows(pool, setup) - before) < metered:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{setup.name}: the ledgers hold {held} of {metered} events")
        await asyncio.sleep(0.1)
    done = time.perf_counter()
    d, g = summary_ms(direct.latencies), summary_ms(gateway.latencies)
    figures = {
        "clients": clients,
        "direct_rps": len(direct.latencies) / direct.elapsed,
        "gateway_rps": len(gateway.latencies) / gateway.elapsed,
        "events": metered,
        "events_per_s": metered / (done - began),
        "lag_s": done - answered,
        "added_p50_ms": g["p50"] - d["p50"],
        "added_p99_ms": g["p99"] - d["p99"],
        "direct_ms": d,
        "gateway_ms": g,
        "errors": {k: v for k, v in (direct.errors + gateway.errors).items() if k != "warm-up"},
    }
    setup.rounds.append(figures)
    print(
        f"{setup.name:8} {clients:3} clients: {figures['events_per_s']:6.0f} events/s, "
        f"added p50 {figures['added_p50_ms']:5.1f} ms p99 {figures['added_p99_ms']:5.1f} ms, "
        f"lag {figures['lag_s']:.1f} s, errors {figures['errors'] or '-'}",
        flush=True,
    )


async def forget_keys(url: str, prefix: str) -> None:
    """The single setup's key states in the shared Redis (the cluster's vanish with it)."""
    client = aioredis.Redis.from_url(url)
    try:
        async for name in client.scan_iter(match=prefix + "*"):
            await client.delete(name)
    finally:
        await client.aclose()


def _mean(rounds: list[dict[str, Any]], name: str) -> float:
    return float(sum(r[name] for r in rounds)) / len(rounds) if rounds else math.nan


NAMES = ("events_per_s", "gateway_rps", "direct_rps", "added_p50_ms", "added_p99_ms", "lag_s")


def table(setups: list[Setup], levels: list[int]) -> str:
    """Per level and setup the rounds' means, and the cluster's ratio to the single node."""
    lines = [f"{'clients':>7} {'setup':8}" + "".join(f"{n:>14}" for n in NAMES)]
    for clients in levels:
        means = {
            s.name: {n: _mean([r for r in s.rounds if r["clients"] == clients], n) for n in NAMES}
            for s in setups
        }
        for name, row in means.items():
            lines.append(f"{clients:>7} {name:8}" + "".join(f"{row[n]:>14.1f}" for n in NAMES))
        single, cluster = means["single"], means["cluster"]
        ratio = [cluster[n] / single[n] if single[n] else math.nan for n in NAMES]
        lines.append(f"{clients:>7} {'ratio':8}" + "".join(f"{r:>14.2f}" for r in ratio))
    return "\n".join(lines)


def start_setups(
    work: Path, endpoints: Endpoints, kafka: KafkaCluster, redis: RedisCluster, uniques: list[str]
) -> list[Setup]:
    """The single-node system, then the cluster's (their imports overlap less that way)."""
    out = []
    shapes = (("single", 1, 1), ("cluster", 2, 2))
    for (name, gateways, consumers), unique in zip(shapes, uniques, strict=True):
        prefix = f"bench-{unique}."
        on = endpoints
        settings = {s: dict(QUIET) for s in ("keys", "gateway", "metering", "billing")}
        if name == "cluster":
            on = Endpoints(kafka.bootstrap, endpoints.database_url, redis.url)
            settings = {s: {**v, **ON_CLUSTER} for s, v in settings.items()}
        folder = work / name
        folder.mkdir()
        system = start_system(
            on, prefix, unique, folder, gateways=gateways, consumers=consumers, settings=settings
        )
        urls = [system.url(replica_name(i)) for i in range(gateways)]
        out.append(Setup(name, system, prefix, unique, on.kafka_bootstrap, urls))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load1, load5, load15 = procstat.load_average()
    print(
        f"cluster scale on {os.cpu_count()} CPUs; load average {load1:.2f} {load5:.2f} {load15:.2f}"
    )
    work = Path(tempfile.mkdtemp(prefix="tollgate-scale-"))
    endpoints = stack_endpoints()
    if not endpoints.database_url:
        raise SystemExit("no PostgreSQL: set TOLLGATE_TEST_DATABASE_URL or run the local stack")
    kafka = KafkaCluster(work, [free_port() for _ in range(3)], [free_port() for _ in range(3)])
    redis = RedisCluster(
        work, [free_port() for _ in range(6)], bus_ports=[free_port() for _ in range(6)]
    )
    setups: list[Setup] = []
    uniques = [uuid.uuid4().hex[:12] for _ in range(2)]
    pool = await asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2)
    try:
        await asyncio.to_thread(redis.start)
        await asyncio.to_thread(kafka.start)
        # Created before the services start, as `make up` and the tests do.
        await ensure_topics(endpoints.kafka_bootstrap, prefix=f"bench-{uniques[0]}.")
        await ensure_topics(kafka.bootstrap, prefix=f"bench-{uniques[1]}.", replication=REPLICATION)
        setups = await asyncio.to_thread(start_setups, work, endpoints, kafka, redis, uniques)
        for setup in setups:
            await make_key(setup)
        for clients in args.levels:
            for _ in range(args.rounds):
                for setup in setups:
                    await one_round(pool, setup, clients, args.duration)
    finally:
        for setup in setups:
            await asyncio.to_thread(setup.system.stop)
        for unique in uniques:
            for service in ("keys", "metering", "billing"):
                await pool.execute(f'DROP SCHEMA IF EXISTS "e2e_{unique}_{service}" CASCADE')
        await pool.close()
        await delete_topics(endpoints.kafka_bootstrap, f"bench-{uniques[0]}.")
        await forget_keys(endpoints.redis_url, f"e2e:{uniques[0]}:")
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(redis.stop)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_start": [load1, load5, load15],
        "load_average_end": list(procstat.load_average()),
        "config": {"levels": args.levels, "rounds": args.rounds, "duration": args.duration},
        "setups": {s.name: s.rounds for s in setups},
        "table": table(setups, args.levels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--levels", default="1,32", help="concurrent clients, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each setup")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of each load")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x]
    out = asyncio.run(run(args))
    print()
    print(out["table"])
    end = out["load_average_end"]
    print(f"load average at the end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
