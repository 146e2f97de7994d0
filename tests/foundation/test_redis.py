"""The real Redis answers and keeps what it is given."""

from __future__ import annotations

import redis.asyncio as aioredis


async def test_redis_round_trip(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    await redis_client.hset(redis_prefix + "key", mapping={"status": "active", "version": "3"})
    assert await redis_client.hgetall(redis_prefix + "key") == {
        b"status": b"active",
        b"version": b"3",
    }
    info = await redis_client.info("persistence")
    assert info["aof_enabled"] == 1
