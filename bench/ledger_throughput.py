"""Ledger benchmark: events/s into the ledgers with exactly-once on, and Usage query latency.

    uv run --frozen python bench/ledger_throughput.py [--events 200000] [--batch 5000]

1. Produces N usage events to a topic of its own (6 partitions; ``--shape``: a backlog of the
   last five minutes of 1,000 keys, or a day of 200 keys), then runs ONE metering
   consumer and then ONE billing consumer (each a real LedgerConsumer: dedupe table,
   offsets in PostgreSQL, one transaction a batch) and reports events/s until every
   offset is stored.
2. Fills the usage ledger with a year of a busy project of 1,000 keys (day rows for every
   key and day, hour rows for a quarter of the hours, minute rows for the last 35 days, one
   minute in a hundred) and times the Usage API's pages at 1d, 1h and 1m buckets, for one key
   and grouped by key or model: p50 and p99 of ``--rounds`` runs each.

Uses the running local stack (deploy.stack); leaves nothing behind (topics and schemas
are its own and are dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr
from starlette.datastructures import QueryParams

from deploy.stack import Stack
from services.billing.consumer import cost_consumer
from services.billing.main import MIGRATIONS as BILLING_MIGRATIONS
from services.billing.settings import BillingSettings
from services.metering import repository
from services.metering.consumer import usage_consumer
from services.metering.main import MIGRATIONS as METERING_MIGRATIONS
from services.metering.settings import MeteringSettings
from shared.catalogue import load_catalogue
from shared.db import apply_migrations, create_pool
from shared.events import UsageRecorded
from shared.exactly_once.consumer import LedgerConsumer
from shared.exactly_once.partitions import DayPartitions, days_between
from shared.kafka import ensure_topics, idempotent_producer
from shared.topics import TOPICS, USAGE_EVENTS
from shared.usage_query import parse_usage_query

REPO = Path(__file__).resolve().parents[1]
MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen3-Embedding-0.6B")
TOKEN = "bench-operator-token-0123456789"


def events(count: int, shape: str = "recent") -> list[bytes]:
    """``recent``: a backlog of live traffic, count events over the last five minutes across
    1,000 keys of 20 projects and both demo models (what a consumer catches up on after a
    pause); ``day``: count events over the last day across 200 keys (nearly every event its
    own minute row: the ledger's worst case)."""
    span, keys = (300, 1000) if shape == "recent" else (86400, 200)
    base = datetime.now(UTC) - timedelta(seconds=span)
    return [
        UsageRecorded(
            occurred_at=base + timedelta(seconds=i * span / count),
            request_id=f"req_{i}",
            project_id=f"proj_{i % keys % 20}",
            key_id=f"key_{i % keys}",
            model=MODELS[i % 2],
            endpoint="/v1/chat/completions",
            input_tokens=100 + i % 1000,
            output_tokens=i % 300,
            cached_input_tokens=i % 50,
            status_code=200,
            latency_ms=40,
        ).to_bytes()
        for i in range(count)
    ]


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = idempotent_producer(bootstrap, "bench", linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, v, key=str(i % 200).encode()) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def stored(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"))


async def consume(name: str, consumer: LedgerConsumer[Any], pool: asyncpg.Pool, total: int) -> None:
    started = time.perf_counter()
    await consumer.start()
    first: float | None = None
    while (done := await stored(pool)) < total:
        if first is None and done > 0:
            first = time.perf_counter()
        await asyncio.sleep(0.05)
    ended = time.perf_counter()
    await consumer.stop()
    steady = total / (ended - first) if first else float("nan")
    print(
        f"{name:9} {total} events in {ended - started:.2f} s (group join included):"
        f" {total / (ended - started):,.0f} events/s;"
        f" after the first batch: {steady:,.0f} events/s;"
        f" {consumer.stats.batches} transactions; parsing {consumer.stats.prepare_s:.2f} s,"
        f" in transactions {consumer.stats.store_s:.2f} s"
    )


async def fill_history(pool: asyncpg.Pool, keys: int) -> datetime:
    """A year of a busy project with ``keys`` keys in the ledger's three tables: every key
    used every day, in a quarter of the hours, and (for the minute table's 35 days) in one
    minute of a hundred. Returns the start of the last 30 days."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    year = now - timedelta(days=365)
    minutes_from = now - timedelta(days=35)
    async with pool.acquire() as conn:  # the minute table's days, as the consumer makes them
        await DayPartitions("usage_minute", "timestamptz").ensure(
            conn, days_between(minutes_from.date(), now.date())
        )
    common = "10, 1000, 100, 300, 1"
    await pool.execute(
        "INSERT INTO usage_day SELECT 'proj_busy', d, 'key_' || k, $2, "
        + common.replace("10,", "240,")
        + " FROM generate_series(date_bin('1 day', $1::timestamptz, TIMESTAMPTZ 'epoch'),"
        " $3::timestamptz, interval '1 day') AS d, generate_series(1, $4) AS k",
        year, MODELS[0], now, keys,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO usage_hour SELECT 'proj_busy', h, 'key_' || k, $2, " + common
        + " FROM generate_series(date_bin('1 hour', $1::timestamptz, TIMESTAMPTZ 'epoch'),"
        " $3::timestamptz, interval '1 hour') AS h, generate_series(1, $4) AS k"
        " WHERE (extract(epoch FROM h)::bigint / 3600 + k) % 4 = 0",
        year, MODELS[0], now, keys,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO usage_minute SELECT 'proj_busy', m, 'key_' || k, $2, " + common
        + " FROM generate_series($1::timestamptz, $3::timestamptz, interval '1 minute') AS m,"
        " generate_series(1, $4) AS k WHERE (extract(epoch FROM m)::bigint / 60 + k) % 100 = 0",
        minutes_from, MODELS[0], now, keys,
    )  # fmt: skip
    for table in ("usage_minute", "usage_hour", "usage_day"):
        await pool.execute(f"ANALYZE {table}")
        rows = await pool.fetchval(f"SELECT count(*) FROM {table}")
        size = await pool.fetchval(  # a partitioned table's size is its partitions'
            "SELECT pg_total_relation_size($1::regclass) + coalesce(sum("
            "pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = $1::regclass",
            table,
        )
        print(f"ledger:   {table:13} {rows:>10,} rows, {size / 2**20:7.1f} MiB with its index")
    return now - timedelta(days=30)


async def query_latency(pool: asyncpg.Pool, keys: int, rounds: int) -> None:
    """The Usage API's pages over the large ledger: a month at 1d, a week at 1h, a day at
    1m, for one key and grouped by key or model, start times not aligned to an hour."""
    month = await fill_history(pool, keys)
    start = int(month.timestamp()) + 17 * 60 + 23  # mid-hour: edges read minutes and hours
    cases = {
        "1d x 31, month, one key": "bucket_width=1d&limit=31&api_key_ids=key_7",
        "1d x 31, month, by key": "bucket_width=1d&limit=31&group_by=api_key_id",
        "1d x 31, month, by model": "bucket_width=1d&limit=31&group_by=model",
        "1h x 168, week, one key": "bucket_width=1h&limit=168&api_key_ids=key_7",
        "1h x 168, week, by key": "bucket_width=1h&limit=168&group_by=api_key_id",
        "1h x 168, week, by model": "bucket_width=1h&limit=168&group_by=model",
        "1m x 1440, day, one key": "bucket_width=1m&limit=1440&api_key_ids=key_7",
        "1m x 1440, day, by key": "bucket_width=1m&limit=1440&group_by=api_key_id",
        "1m x 1440, day, by model": "bucket_width=1m&limit=1440&group_by=model",
    }
    for label, text in cases.items():
        query = parse_usage_query(
            QueryParams(f"{text}&start_time={start}"),
            widths=("1m", "1h", "1d"),
            group_fields=("api_key_id", "model"),
            now=datetime.now(UTC),
        )
        await repository.sum_buckets(pool, "proj_busy", query)  # warm
        timings = []
        for _ in range(rounds):
            t = time.perf_counter()
            await repository.sum_buckets(pool, "proj_busy", query)
            timings.append((time.perf_counter() - t) * 1000)
        timings.sort()
        print(
            f"query:    {label:26} p50 {statistics.median(timings):6.1f} ms"
            f"  p99 {timings[max(0, int(len(timings) * 0.99) - 1)]:6.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--shape", choices=("recent", "day"), default="recent")
    parser.add_argument("--keys", type=int, default=1000, help="keys of the large ledger (0: skip)")
    parser.add_argument("--rounds", type=int, default=100, help="timed runs of each query")
    args = parser.parse_args()
    endpoints = Stack().endpoints()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}."
    topic = prefix + USAGE_EVENTS
    await ensure_topics(endpoints.kafka_bootstrap, prefix=prefix)
    values = events(args.events, args.shape)
    took = await produce(endpoints.kafka_bootstrap, topic, values)
    print(f"produced  {args.events} events in {took:.2f} s")
    common = {
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "database_url": endpoints.database_url,
        "admin_token": TOKEN,
        "internal_token": SecretStr("bench-internal-token-0123456789"),
        "topic_prefix": prefix,
        "max_batch": args.batch,
        "log_json": False,
        "log_level": "WARNING",
    }
    m_set = MeteringSettings(db_schema=f"bench_m_{run}", consumer_group=f"bench-m-{run}", **common)
    b_set = BillingSettings(
        db_schema=f"bench_b_{run}",
        consumer_group=f"bench-b-{run}",
        **common,
    )
    dsn = endpoints.database_url
    m_pool = await create_pool(dsn, m_set.db_schema, max_size=5)
    b_pool = await create_pool(dsn, b_set.db_schema, max_size=5)
    try:
        await apply_migrations(m_pool, m_set.db_schema, METERING_MIGRATIONS)
        await apply_migrations(b_pool, b_set.db_schema, BILLING_MIGRATIONS)
        await consume("metering", usage_consumer(m_set, m_pool, "bench-m"), m_pool, args.events)
        catalogue = load_catalogue(REPO / "deploy" / "models.yaml")
        await consume(
            "billing", cost_consumer(b_set, b_pool, catalogue, "bench-b"), b_pool, args.events
        )
        if args.keys:
            await query_latency(m_pool, args.keys, args.rounds)
    finally:
        for pool, schema in ((m_pool, m_set.db_schema), (b_pool, b_set.db_schema)):
            await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await pool.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([spec.with_prefix(prefix).name for spec in TOPICS])
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
