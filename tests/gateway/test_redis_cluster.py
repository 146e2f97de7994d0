"""A gateway on a Redis Cluster: keys and rate limits across two replicas, and through the
failover of a master (killed with SIGKILL, its replica takes over)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from deploy.redis_cluster import RedisCluster
from shared.policy import RateLimits
from shared.redis_client import connect
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import CHAT, FakeKeyService, new_key
from tests.polling import eventually
from tests.served import Served

pytestmark = pytest.mark.cluster


async def test_a_gateway_on_the_cluster_keeps_keys_and_limits_through_a_failover(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    redis_cluster: RedisCluster,
) -> None:
    gateways = [await make_gateway(redis=redis_cluster.url, redis_cluster=True) for _ in range(2)]
    secret, state = new_key(rate_limits=RateLimits(requests_per_minute=30))
    keyservice[0].add(state)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=30) as client:

        async def burst(count: int) -> Counter[int]:
            answers = await asyncio.gather(
                *(
                    client.post(
                        gateways[i % 2].url + "/v1/chat/completions", json=body, headers=headers
                    )
                    for i in range(count)
                )
            )
            return Counter(a.status_code for a in answers)

        assert await burst(50) == {200: 30, 429: 20}, "the limit holds across two replicas"
        # The master serving this key's counters (its project's hash tag) dies with SIGKILL;
        # its replica takes over.
        assert len(redis_cluster.masters()) == 3
        finder = connect(redis_cluster.url, cluster=True, timeout_s=2.0)
        assert isinstance(finder, ClusterClient)
        try:
            await finder.initialize()
            node = finder.get_node_from_key("{proj_test}")
            assert node is not None
            holder = int(node.port)
        finally:
            await finder.aclose()
        redis_cluster.kill_node(holder)
        # Until a replica takes over, valid keys keep working on each replica's share.
        during = await burst(10)
        assert set(during) <= {200, 429}, during
        await asyncio.to_thread(redis_cluster.wait_failover, holder, 30)

        async def degraded() -> int:
            ready = await client.get(gateways[0].url + "/readyz")
            return int(ready.json()["policy_degraded_admissions"])

        async def settled() -> bool:
            before = await degraded()
            await burst(4)
            return await degraded() == before

        # Back on the shared counters: the promoted replica holds the window, less at most
        # the last increments it had not received when its master died (replication is
        # asynchronous).
        await eventually(settled, until=bool, timeout=20, what="back on the cluster")
        after = await burst(10)
        assert after[200] <= 2, after
    redis_cluster.start_node(holder)


async def test_a_gateway_serves_valid_keys_with_every_cluster_node_gone(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    redis_cluster: RedisCluster,
) -> None:
    """With no node to rediscover the slots from (or nodes disagreeing on a slot's owner in a
    failover) the cluster client raises its own RedisClusterException, which is no RedisError:
    the gateway must take it for Redis being away (a key it confirmed keeps working, limits on
    its share), not answer 500."""
    gateway = await make_gateway(
        redis=redis_cluster.url, redis_cluster=True, dependency_retry_s=0.2
    )
    secret, state = new_key(rate_limits=RateLimits(requests_per_minute=10_000))
    keyservice[0].add(state)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {secret}"}
    url = gateway.url + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(url, json=body, headers=headers)).status_code == 200
        ports = list(redis_cluster.ports)
        for port in ports:
            redis_cluster.kill_node(port)
        try:
            answers: Counter[int] = Counter()
            for _ in range(15):  # past several of the breaker's retries, each a rediscovery
                answers[(await client.post(url, json=body, headers=headers)).status_code] += 1
                await asyncio.sleep(0.1)  # paced, so calls reach Redis between breaker spells
            assert answers == {200: 15}, answers
        finally:
            for port in ports:
                redis_cluster.start_node(port)
            await asyncio.to_thread(redis_cluster.wait_ok, 30)
