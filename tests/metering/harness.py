"""What the metering and billing tests share: events, a price book, totals, running services.

Tests produce ``UsageRecorded`` events straight to their own prefixed topic, run the real
services (app factory and lifespan, real Kafka and PostgreSQL), and compare the ledgers
with totals computed here from the events produced (see ``tests.metering.ledgers``).
"""

from __future__ import annotations

import asyncio
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
from fastapi import FastAPI

from deploy.stack import Endpoints
from services.billing.main import create_app as create_billing
from services.billing.settings import BillingSettings
from services.metering.main import create_app as create_metering
from services.metering.settings import MeteringSettings
from shared.catalogue import load_catalogue
from shared.events import UsageRecorded
from shared.kafka import idempotent_producer

ADMIN_TOKEN = "test-operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# What the gateways send billing (and the key service): never the operator token.
INTERNAL_TOKEN = "test-internal-token-0123456789"
INTERNAL_AUTH = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
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


def stream_of(
    count: int, *, projects: int = 2, keys: int = 12, seed: int = 0
) -> list[UsageRecorded]:
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
    bootstrap: str,
    topic: str,
    events: Iterable[UsageRecorded | bytes],
    partition: int | None = None,
) -> None:
    """Send events (or raw bytes) keyed by key id, and wait until the broker has them all."""
    producer = idempotent_producer(bootstrap, "test-producer", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for e in events:
            value, key = (
                (e, b"poison") if isinstance(e, bytes) else (e.to_bytes(), e.key_id.encode())
            )
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


Triple = tuple[str, str, str]  # project, key, model


def _zeros() -> list[int]:
    return [0, 0, 0, 0, 0]  # requests, input, cached input, output, errors


@dataclass
class Totals:
    """Tokens, requests and dollars per (project, key, model), computed from events."""

    tokens: dict[tuple[str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0, 0])
    )
    costs: dict[tuple[str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def expected(
    events: Sequence[UsageRecorded],
    catalogue_path: Path,
    billed: Sequence[UsageRecorded] | None = None,
) -> Totals:
    """What the ledgers must hold: each distinct event once, priced at its occurred_at.

    ``billed`` are the events billing can price (default: all of ``events``).
    """
    catalogue = load_catalogue(catalogue_path)
    totals = Totals()
    for e in {e.event_id: e for e in events}.values():
        t = totals.tokens[(e.project_id, e.key_id, e.model)]
        t[0] += 1
        t[1] += e.input_tokens
        t[2] += e.cached_input_tokens
        t[3] += e.output_tokens
        t[4] += e.status_code >= 400
    with localcontext() as ctx:
        ctx.prec = 80
        for e in {e.event_id: e for e in (events if billed is None else billed)}.values():
            entry = catalogue.get(e.model)
            assert entry is not None
            price = entry.price_at(e.occurred_at)
            assert price is not None
            cached_price = price.cached_input_per_million or price.input_per_million
            totals.costs[(e.project_id, e.key_id, e.model)] += (
                (e.input_tokens - e.cached_input_tokens) * price.input_per_million
                + e.cached_input_tokens * cached_price
                + e.output_tokens * price.output_per_million
            ) / Decimal(1_000_000)
    return totals


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (consumer included) running, and a client on it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


@asynccontextmanager
async def both(
    metering: MeteringSettings, billing: BillingSettings
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One metering and one billing replica, running."""
    async with running(create_metering(metering)) as m, running(create_billing(billing)) as b:
        yield m, b


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The consumer counters a service reports on /readyz (whatever its status)."""
    body: dict[str, Any] = (await client.get("/readyz")).json()
    return body
