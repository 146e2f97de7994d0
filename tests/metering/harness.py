"""What the metering and billing tests share: events, a price book, running services, totals.

Tests produce ``UsageRecorded`` events straight to their own prefixed topic, run the real
services (app factory and lifespan, real Kafka and PostgreSQL), and compare the ledgers,
read through the Usage and Costs APIs, with totals computed here from the events produced.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from deploy.stack import Endpoints
from services.billing.main import create_app as create_billing
from services.billing.settings import BillingSettings
from services.metering.main import create_app as create_metering
from services.metering.settings import MeteringSettings
from shared.catalogue import load_catalogue
from shared.events import DeadLetter, UsageRecorded
from shared.kafka import idempotent_producer
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ
from tests.polling import eventually

ADMIN_TOKEN = "test-operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
PRICE_CHANGE = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHAT, EMBED, UNPRICED = "test/chat", "test/embed", "test/unpriced"

CATALOGUE_YAML = f"""
models:
  - id: {CHAT}
    upstream: {{base_url: "http://127.0.0.1:1/v1"}}
    prices:
      - {{effective_from: "2026-01-01T00:00:00Z", input_per_million: "0.150",
          output_per_million: "0.600", cached_input_per_million: "0.075"}}
      - {{effective_from: "{PRICE_CHANGE.isoformat()}", input_per_million: "0.2",
          output_per_million: "0.8"}}
      - {{effective_from: "2027-01-01T00:00:00Z", input_per_million: "1.000001",
          output_per_million: "3"}}
  - id: {EMBED}
    kind: embedding
    upstream: {{base_url: "http://127.0.0.1:1/v1"}}
    prices:
      - {{effective_from: "2026-01-01T00:00:00Z", input_per_million: "0.020",
          output_per_million: "0"}}
  - id: {UNPRICED}
    upstream: {{base_url: "http://127.0.0.1:1/v1"}}
    prices:
      - {{effective_from: "2030-01-01T00:00:00Z", input_per_million: "1",
          output_per_million: "1"}}
"""


@pytest.fixture
def catalogue_path(tmp_path: Path) -> Path:
    """A price book of the test's own, with several effective dates."""
    path = tmp_path / "models.yaml"
    path.write_text(CATALOGUE_YAML)
    return path


@pytest.fixture
async def schemas(endpoints: Endpoints, unique: str) -> AsyncIterator[tuple[str, str]]:
    """A metering schema and a billing schema of the test's own, dropped afterwards."""
    names = (f"m_{unique}", f"b_{unique}")
    yield names
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        for name in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def usage(
    *,
    project: str = "proj_a",
    key: str = "key_1",
    model: str = CHAT,
    at: datetime = DAY0,
    input_tokens: int = 100,
    output_tokens: int = 20,
    cached: int = 0,
    status: int = 200,
) -> UsageRecorded:
    """One usage event as the gateway would write it."""
    return UsageRecorded(
        occurred_at=at,
        request_id=f"req_{uuid.uuid4().hex[:12]}",
        project_id=project,
        key_id=key,
        model=model,
        endpoint="/v1/chat/completions",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        status_code=status,
        latency_ms=12,
    )


def stream_of(count: int, *, projects: int = 2, keys: int = 12, seed: int = 0) -> list[UsageRecorded]:
    """count varied events over three days, across the price change, keys and both models."""
    out = []
    for i in range(count):
        n = i + seed
        input_tokens = 1 + (n * 7919) % 5000
        out.append(
            usage(
                project=f"proj_{n % projects}",
                key=f"key_{n % keys}",
                model=CHAT if n % 5 else EMBED,
                at=DAY0 + timedelta(minutes=(n * 37) % (3 * 24 * 60), seconds=n % 60),
                input_tokens=input_tokens,
                output_tokens=0 if n % 5 == 0 else (n * 104729) % 900,
                cached=min(input_tokens, (n * 13) % 50) if n % 3 == 0 else 0,
                status=429 if n % 17 == 0 else 200,
            )
        )
    return out


async def produce(
    bootstrap: str, topic: str, events: Iterable[UsageRecorded | bytes], partition: int | None = None
) -> None:
    """Send events (or raw bytes) keyed by key id, and wait until the broker has them all."""
    producer = idempotent_producer(bootstrap, "test-producer", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for e in events:
            value, key = (e, b"poison") if isinstance(e, bytes) else (e.to_bytes(), e.key_id.encode())
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Totals:
    """Tokens, requests and dollars per (project, key, model), computed from events."""

    tokens: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0, 0]))
    costs: dict[tuple[str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def expected(events: Sequence[UsageRecorded], catalogue_path: Path) -> Totals:
    """What the ledgers must hold: each distinct event once, priced at its occurred_at."""
    catalogue = load_catalogue(catalogue_path)
    totals = Totals()
    seen: set[uuid.UUID] = set()
    with localcontext() as ctx:
        ctx.prec = 80
        for e in events:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            k = (e.project_id, e.key_id, e.model)
            t = totals.tokens[k]
            t[0] += 1
            t[1] += e.input_tokens
            t[2] += e.cached_input_tokens
            t[3] += e.output_tokens
            t[4] += e.status_code >= 400
            entry = catalogue.get(e.model)
            assert entry is not None
            price = entry.price_at(e.occurred_at)
            assert price is not None
            cached_price = price.cached_input_per_million or price.input_per_million
            totals.costs[k] += (
                (e.input_tokens - e.cached_input_tokens) * price.input_per_million
                + e.cached_input_tokens * cached_price
                + e.output_tokens * price.output_per_million
            ) / Decimal(1_000_000)
    return totals


def settings_pair(
    endpoints: Endpoints,
    database_url: str | None,
    prefix: str,
    schemas: tuple[str, str],
    catalogue_path: Path,
    unique: str,
    **overrides: Any,
) -> tuple[MeteringSettings, BillingSettings]:
    """Settings for one metering and one billing replica of this test."""
    common: dict[str, Any] = {
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "database_url": database_url or endpoints.database_url,
        "admin_token": ADMIN_TOKEN,
        "topic_prefix": prefix,
        "session_timeout_ms": 6000,
        "log_json": False,
        "log_level": "WARNING",
        **overrides,
    }
    return (
        MeteringSettings(db_schema=schemas[0], consumer_group=f"metering-{unique}", **common),
        BillingSettings(
            db_schema=schemas[1],
            consumer_group=f"billing-{unique}",
            catalogue_path=catalogue_path,
            **common,
        ),
    )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (consumer included) running, and a client on it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


@asynccontextmanager
async def both(metering: MeteringSettings, billing: BillingSettings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One metering and one billing replica, running."""
    async with running(create_metering(metering)) as m, running(create_billing(billing)) as b:
        yield m, b


RANGE = {"start_time": int(DAY0.timestamp()), "end_time": int((DAY0 + timedelta(days=3)).timestamp())}


async def usage_totals(client: httpx.AsyncClient, project: str) -> dict[tuple[str, str, str], list[int]]:
    """The Usage API's totals per key and model over the test range."""
    r = await client.get(
        f"/v1/projects/{project}/usage",
        params={**RANGE, "bucket_width": "1d", "group_by": "api_key_id,model"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    out: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for bucket in r.json()["data"]:
        for res in bucket["results"]:
            t = out[(project, res["api_key_id"], res["model"])]
            t[0] += res["num_model_requests"]
            t[1] += res["input_tokens"]
            t[2] += res["input_cached_tokens"]
            t[3] += res["output_tokens"]
            t[4] += res["num_errors"]
    return dict(out)


async def cost_totals(client: httpx.AsyncClient, project: str) -> dict[tuple[str, str, str], Decimal]:
    """The Costs API's exact amounts per key and model over the test range."""
    r = await client.get(
        f"/v1/projects/{project}/costs",
        params={**RANGE, "group_by": "api_key_id,model"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    out: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for bucket in json.loads(r.text, parse_float=Decimal)["data"]:
        for res in bucket["results"]:
            assert res["amount"]["currency"] == "usd"
            out[(project, res["api_key_id"], res["model"])] += Decimal(res["amount"]["value"])
    return dict(out)


async def ledgers(
    m: httpx.AsyncClient, b: httpx.AsyncClient, projects: Iterable[str]
) -> tuple[dict[Any, list[int]], dict[Any, Decimal]]:
    """Both ledgers, read through their APIs, for the projects."""
    tokens: dict[Any, list[int]] = {}
    costs: dict[Any, Decimal] = {}
    for p in projects:
        tokens.update(await usage_totals(m, p))
        costs.update(await cost_totals(b, p))
    return tokens, costs


async def assert_ledgers_equal(
    m: httpx.AsyncClient,
    b: httpx.AsyncClient,
    want: Totals,
    *,
    bootstrap: str,
    database_url: str,
    schemas: tuple[str, str],
    topic: str,
    timeout: float = 60.0,
) -> None:
    """Wait until every record is consumed, then demand exact equality of both ledgers."""
    projects = sorted({k[0] for k in want.tokens})
    want_tokens = {k: v for k, v in want.tokens.items()}
    want_costs = {k: v.normalize() for k, v in want.costs.items() if v}

    async def probe() -> tuple[Any, Any]:
        tokens, costs = await ledgers(m, b, projects)
        return tokens, {k: v.normalize() for k, v in costs.items() if v}

    await eventually(
        probe, until=lambda got: got == (want_tokens, want_costs), timeout=timeout, what="ledgers"
    )
    # Equal once is not enough: wait for every offset to be stored, then check again, so a
    # duplicate applied late would show.
    await eventually(
        lambda: drained(bootstrap, database_url, schemas, topic), timeout=timeout, what="offsets at the end"
    )
    assert await probe() == (want_tokens, want_costs)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition of topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


_ENDS: dict[str, dict[int, int]] = {}


async def drained(bootstrap: str, database_url: str, schemas: tuple[str, str], topic: str) -> bool:
    """True when both services stored, in PostgreSQL, the end offset of every partition."""
    ends = {p: o for p, o in (await end_offsets(bootstrap, topic)).items() if o > 0}
    conn = await asyncpg.connect(database_url)
    try:
        for schema in schemas:
            rows = await conn.fetch(
                f'SELECT partition, next_offset FROM "{schema}".consumer_offsets WHERE topic = $1',
                topic,
            )
            if {r["partition"]: r["next_offset"] for r in rows} != ends:
                return False
    finally:
        await conn.close()
    return True


async def dead_letters(bootstrap: str, prefix: str, count: int) -> list[DeadLetter]:
    """Read count dead letters from the test's DLQ topic (fails if fewer arrive)."""
    consumer = AIOKafkaConsumer(
        prefix + USAGE_EVENTS_DLQ,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[DeadLetter] = []
    try:
        while len(got) < count:
            batch = await consumer.getmany(timeout_ms=20_000)
            assert batch, f"only {len(got)} of {count} dead letters arrived"
            for records in batch.values():
                got.extend(DeadLetter.model_validate_json(r.value) for r in records)
        extra = await consumer.getmany(timeout_ms=1000)
        got.extend(DeadLetter.model_validate_json(r.value) for rs in extra.values() for r in rs)
    finally:
        await consumer.stop()
    return got


def usage_topic(prefix: str) -> str:
    return prefix + USAGE_EVENTS
