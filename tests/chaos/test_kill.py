"""The crash the chaos test relies on: ``Private.kill()`` ends a server and every process it
started at once (SIGKILL, no shutdown), and ``start()`` brings it back with what it had
acknowledged."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from deploy.process import children_of, is_running
from tests.private_servers import Private


@pytest.mark.slow
async def test_postgres_killed_with_its_backends_restarts_with_committed_rows(
    private_postgres: Private,
) -> None:
    conn = await asyncpg.connect(private_postgres.database_url)
    await conn.execute("CREATE TABLE crash (n int)")
    await conn.execute("INSERT INTO crash VALUES (7)")
    postmaster = private_postgres.server.pid()
    assert postmaster is not None
    family = [postmaster, *children_of(postmaster)]
    assert len(family) > 2  # the checkpointer, writers and this connection's backend
    await private_postgres.akill()
    assert not any(is_running(pid) for pid in family)
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    await private_postgres.astart()  # crash recovery; a backend left behind would block it
    conn = await asyncpg.connect(private_postgres.database_url)
    try:
        assert await conn.fetchval("SELECT sum(n) FROM crash") == 7
    finally:
        await conn.close()


async def test_redis_killed_restarts_with_acknowledged_writes(private_redis: Private) -> None:
    client = aioredis.Redis.from_url(private_redis.redis_url)
    try:
        await client.set("crash", "kept")
        pid = private_redis.server.pid()
        assert pid is not None
        await private_redis.akill()
        assert not is_running(pid)
    finally:
        await client.aclose()
    await private_redis.astart()
    client = aioredis.Redis.from_url(private_redis.redis_url)
    try:
        assert await client.get("crash") == b"kept"
    finally:
        await client.aclose()
