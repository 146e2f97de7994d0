"""The dedupe window: never shorter than the topic's retention; older event ids are forgotten."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.metering.consumer import usage_consumer
from services.metering.main import MIGRATIONS
from services.metering.settings import MeteringSettings
from shared.db import apply_migrations, create_pool
from shared.exactly_once.settings import RETENTION_S
from shared.exactly_once.store import claim
from tests.metering.harness import ADMIN_TOKEN, INTERNAL_TOKEN, usage
from tests.metering.ledgers import Case

TOKENS: dict[str, Any] = {
    "admin_token": SecretStr(ADMIN_TOKEN),
    "internal_token": SecretStr(INTERNAL_TOKEN),
}


@pytest.mark.unit
def test_a_window_shorter_than_the_retention_is_refused() -> None:
    with pytest.raises(ValidationError, match="dedupe_window_s"):
        MeteringSettings(**TOKENS, dedupe_window_s=RETENTION_S - 1)
    assert MeteringSettings(**TOKENS).dedupe_window_s >= RETENTION_S


async def test_cleanup_forgets_only_ids_older_than_the_window(case: Case) -> None:
    settings, _ = case.settings()
    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        old, edge, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        window = settings.dedupe_window_s
        await pool.executemany(
            "INSERT INTO processed_events (event_id, seen_at)"
            " VALUES ($1, now() - make_interval(secs => $2))",
            [(old, window + 3600), (edge, window - 3600), (recent, 60)],
        )
        # Not started: only its cleanup is used, against the real table.
        consumer = usage_consumer(settings, pool, "test")
        assert await consumer.cleanup_dedupe() == 1
        left = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM processed_events")}
        assert left == {edge, recent}
    finally:
        await pool.close()


async def test_an_id_still_in_the_window_is_a_duplicate(case: Case) -> None:
    settings, _ = case.settings()
    pool = await create_pool(case.database_url, settings.db_schema)
    try:
        await apply_migrations(pool, settings.db_schema, MIGRATIONS)
        event, other = usage(), usage()
        async with pool.acquire() as conn:
            assert await claim(conn, [event]) == [event]
            assert await claim(conn, [other, event]) == [other]
    finally:
        await pool.close()
