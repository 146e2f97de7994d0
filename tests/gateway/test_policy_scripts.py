"""A gateway loads its policy scripts into Redis at start, before any request needs them."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.gateway.policies.scripts import ADMIT, PEEK, SEED, SETTLE
from shared.redis_client import LuaScript
from tests.gateway.conftest import StartGateway
from tests.polling import eventually


async def test_a_gateway_loads_its_policy_scripts_at_start(
    make_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    await redis_client.script_flush()
    shas = [LuaScript(source).sha for source in (ADMIT, SETTLE, SEED, PEEK)]
    await make_gateway()
    loaded = await eventually(
        lambda: redis_client.script_exists(*shas), until=all, timeout=10, what="scripts loaded"
    )
    assert loaded == [True] * 4
