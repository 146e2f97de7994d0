"""Session fixtures on the real servers, and per-test isolation on top of them.

The servers are containers when ``TOLLGATE_TEST_SERVERS=containers`` (``tests/containers.py``),
else the ones the ``TOLLGATE_TEST_*`` variables point at, or else the local stack
(``deploy.stack``), started here when it is not running. A server that cannot be reached
fails the suite with its name and log; nothing is ever skipped for a missing server.
Each test gets its own topic prefix, consumer groups, database schema and Redis prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack import Endpoints, Stack
from shared.kafka import ensure_topics

# The fixtures that start or reach a server: Kafka, PostgreSQL, Redis (shared or private) or an
# app served on a port. A test marked `unit` (`make test-unit`, run with no server reachable)
# may request none of them, directly or through another fixture: the run stops at collection.
SERVER_FIXTURES = frozenset(
    {
        "endpoints",
        "topic_prefix",
        "pg_schema",
        "schemas",
        "redis_client",
        "redis_prefix",
        "private_kafka",
        "private_postgres",
        "private_redis",
        "redis_cluster",
        "kafka_cluster",
        "clusters",
        "upstream",
        "keyservice",
        "make_gateway",
        "gateway",
        "served",
        "serve",
        "lean",
        "stock",
        "running",
        "browser",
        "system",
        "engines",
        "secured_system",
        "drop_schemas",
    }
)


def unit_tests_on_servers(items: list[pytest.Item]) -> list[str]:
    """Each `unit` test that requests a server fixture, with the fixtures it requests."""
    found = []
    for item in items:
        if item.get_closest_marker("unit") is None:
            continue
        servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if servers:
            found.append(f"{item.nodeid} requests {', '.join(sorted(servers))}")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a `unit` test that needs a server: the quick tier must run with none."""
    found = unit_tests_on_servers(items)
    if found:
        raise pytest.UsageError("tests marked `unit` must need no server:\n  " + "\n  ".join(found))


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    """Kafka, PostgreSQL and Redis for the whole session."""
    if os.environ.get("TOLLGATE_TEST_SERVERS") == "containers":
        from tests.containers import ContainerServers

        servers = ContainerServers()
        try:
            yield servers.start()
        finally:
            servers.stop()
        return
    given = {
        "kafka": os.environ.get("TOLLGATE_TEST_KAFKA_BOOTSTRAP"),
        "postgres": os.environ.get("TOLLGATE_TEST_DATABASE_URL"),
        "redis": os.environ.get("TOLLGATE_TEST_REDIS_URL"),
    }
    if all(given.values()):
        yield Endpoints(given["kafka"] or "", given["postgres"] or "", given["redis"] or "")
        return
    try:
        found = Stack().up()
    except Exception as exc:
        pytest.fail(f"the test servers could not be started: {exc}", pytrace=False)
    yield found


@pytest.fixture
def unique() -> str:
    """A short id no other test shares."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def topic_prefix(endpoints: Endpoints, unique: str) -> AsyncIterator[str]:
    """A topic prefix of this test's own, with Tollgate's topics created under it.

    The topics are deleted afterwards, so a long-lived local broker does not pile up
    thousands of partitions (which would slow its every restart).
    """
    prefix = f"test-{unique}."
    await ensure_topics(endpoints.kafka_bootstrap, prefix=prefix)
    yield prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@pytest.fixture
async def pg_schema(endpoints: Endpoints, unique: str) -> AsyncIterator[str]:
    """A database schema name of this test's own, dropped afterwards."""
    schema = f"t_{unique}"
    yield schema
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def redis_client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; tests key everything under ``redis_prefix``."""
    client = aioredis.Redis.from_url(endpoints.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: aioredis.Redis, unique: str) -> AsyncIterator[str]:
    """A Redis key prefix of this test's own, cleared afterwards."""
    prefix = f"test:{unique}:"
    yield prefix
    async for key in redis_client.scan_iter(match=prefix + "*"):
        await redis_client.delete(key)


pytest_plugins = ["tests.private_servers"]
