"""The ledgers as a test sees them: one test's world (``Case``), and both APIs read back.

``Case.assert_ledgers`` waits until both services stored the end offset of every
partition, then demands the Usage and Costs APIs equal the totals of the events produced.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from deploy.stack import Endpoints
from services.billing.settings import BillingSettings
from services.metering.settings import MeteringSettings
from shared.events import DeadLetter, UsageRecorded
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ
from tests.metering.harness import ADMIN_TOKEN, AUTH, DAY0, INTERNAL_TOKEN, expected, produce
from tests.polling import eventually


@dataclass(frozen=True)
class Case:
    """One test's world: servers, topic prefix, schemas and price book."""

    bootstrap: str
    database_url: str
    prefix: str
    schemas: tuple[str, str]
    catalogue_path: Path
    unique: str

    @property
    def topic(self) -> str:
        return self.prefix + USAGE_EVENTS

    def with_database(self, database_url: str) -> Case:
        """The same case on another PostgreSQL (a private one that a test restarts)."""
        return replace(self, database_url=database_url)

    def settings(self, **overrides: Any) -> tuple[MeteringSettings, BillingSettings]:
        """Settings for one metering and one billing replica of this test."""
        common: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "database_url": self.database_url,
            "admin_token": ADMIN_TOKEN,
            "internal_token": SecretStr(INTERNAL_TOKEN),
            "topic_prefix": self.prefix,
            "session_timeout_ms": 6000,
            "log_json": False,
            "log_level": "WARNING",
            **overrides,
        }
        return (
            MeteringSettings(
                db_schema=self.schemas[0],
                consumer_group=f"metering-{self.unique}",
                # The tests' usage is in March 2026: its minutes are kept.
                **{"minute_retention_days": 3660, **common},
            ),
            BillingSettings(
                db_schema=self.schemas[1],
                consumer_group=f"billing-{self.unique}",
                catalogue_path=self.catalogue_path,
                **common,
            ),
        )

    async def produce(
        self, events: Iterable[UsageRecorded | bytes], partition: int | None = None
    ) -> None:
        await produce(self.bootstrap, self.topic, events, partition)

    async def assert_ledgers(
        self,
        m: httpx.AsyncClient,
        b: httpx.AsyncClient,
        events: Sequence[UsageRecorded],
        billed: Sequence[UsageRecorded] | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Wait until every record is consumed, then demand exact equality of both ledgers."""
        want = expected(events, self.catalogue_path, billed)
        projects = sorted({k[0] for k in want.tokens})
        want_both = (dict(want.tokens), dict(want.costs))

        async def probe() -> tuple[Any, Any]:
            return await ledgers(m, b, projects)

        await eventually(probe, until=lambda got: got == want_both, timeout=timeout, what="ledgers")
        # Equal once is not enough: wait until every offset is stored, then look again, so
        # that a duplicate applied late would show.
        await eventually(self.drained, timeout=timeout, what="offsets at the end")
        assert await probe() == want_both

    async def drained(self) -> bool:
        """True when both services stored, in PostgreSQL, the end offset of every partition."""
        ends = {p: o for p, o in (await end_offsets(self.bootstrap, self.topic)).items() if o}
        conn = await asyncpg.connect(self.database_url)
        try:
            for schema in self.schemas:
                rows = await conn.fetch(
                    f'SELECT partition, next_offset FROM "{schema}".consumer_offsets'
                    " WHERE topic = $1",
                    self.topic,
                )
                if {r["partition"]: r["next_offset"] for r in rows} != ends:
                    return False
        finally:
            await conn.close()
        return True


@pytest.fixture
def case(
    endpoints: Endpoints,
    topic_prefix: str,
    schemas: tuple[str, str],
    catalogue_path: Path,
    unique: str,
) -> Case:
    """This test's world on the shared servers."""
    return Case(
        endpoints.kafka_bootstrap,
        endpoints.database_url,
        topic_prefix,
        schemas,
        catalogue_path,
        unique,
    )


RANGE = {
    "start_time": int(DAY0.timestamp()),
    "end_time": int((DAY0 + timedelta(days=3)).timestamp()),
}


async def usage_totals(
    client: httpx.AsyncClient, project: str
) -> dict[tuple[str, str, str], list[int]]:
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


async def cost_totals(
    client: httpx.AsyncClient, project: str
) -> dict[tuple[str, str, str], Decimal]:
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
