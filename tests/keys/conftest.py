"""Fixtures of the key service's tests: its settings and a running service per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from deploy.stack import Endpoints
from services.keys.settings import KeysSettings
from tests.keys.harness import Running, connect, make_settings, running


@pytest.fixture
def keys_settings(
    endpoints: Endpoints, pg_schema: str, topic_prefix: str, unique: str, redis_prefix: str
) -> KeysSettings:
    """Settings on the shared servers, isolated by schema, topic prefix and consumer group."""
    return make_settings(
        kafka=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url,
        schema=pg_schema,
        prefix=topic_prefix,
        group=f"keys-last-used-{unique}",
        redis_url=endpoints.redis_url,
        redis_prefix=redis_prefix,
    )


@pytest.fixture
async def keys(keys_settings: KeysSettings) -> AsyncIterator[Running]:
    """The key service, running in-process on the test's own schema and topics."""
    async with running(keys_settings) as service:
        yield service


@pytest.fixture
async def db(endpoints: Endpoints, pg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's schema."""
    conn = await connect(endpoints.database_url, pg_schema)
    yield conn
    await conn.close()
