"""Failure tests 1, 3, 5 and 6 of issue 5, on both ledgers (metering and billing) at once.

Each ends with the Usage and Costs APIs equal to the events produced: exact token,
request, error and dollar totals per project, key and model.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import asyncpg

from deploy.stack import Endpoints
from shared.events import utc_now
from tests.metering.harness import (
    CHAT,
    UNPRICED,
    assert_ledgers_equal,
    both,
    dead_letters,
    expected,
    produce,
    settings_pair,
    stream_of,
    usage,
    usage_topic,
)


async def test_replay_from_offset_zero_and_producer_retries_count_once(
    endpoints: Endpoints, topic_prefix: str, schemas: tuple[str, str], catalogue_path: Path, unique: str
) -> None:
    topic = usage_topic(topic_prefix)
    events = stream_of(3000)
    # A producer retry: the same events (same ids) appended again at other offsets.
    await produce(endpoints.kafka_bootstrap, topic, events + events[:500])
    m_set, b_set = settings_pair(endpoints, None, topic_prefix, schemas, catalogue_path, unique)
    want = expected(events, catalogue_path)
    check = {
        "bootstrap": endpoints.kafka_bootstrap,
        "database_url": endpoints.database_url,
        "schemas": schemas,
        "topic": topic,
    }
    async with both(m_set, b_set) as (m, b):
        await assert_ledgers_equal(m, b, want, **check)
    # Every offset forgotten: both services replay the whole topic from offset 0.
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        for schema in schemas:
            await conn.execute(f'DELETE FROM "{schema}".consumer_offsets')
    finally:
        await conn.close()
    more = stream_of(200, seed=10_000)
    await produce(endpoints.kafka_bootstrap, topic, more)
    async with both(m_set, b_set) as (m, b):
        await assert_ledgers_equal(m, b, expected(events + more, catalogue_path), **check)
