"""The key store's versioned writes and the policy scripts work on a Redis Cluster as on one
node, across slots (the gateway on a cluster: tests/gateway/test_redis_cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from deploy.redis_cluster import RedisCluster
from services.gateway.policies.counters import ADMITTED, OVER_RATE, RedisCounters
from services.gateway.policies.plan import Planner
from shared.key_store import KeyStore
from shared.policy import RateLimits
from shared.redis_client import connect, subscription_urls
from tests.gateway.harness import new_key

pytestmark = pytest.mark.cluster

T0 = 1_800_000_000_000


@pytest.fixture
async def cluster_client(redis_cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = connect(redis_cluster.url, cluster=True, timeout_s=2.0)
    assert isinstance(client, ClusterClient)
    yield client
    await client.aclose()


async def test_the_key_store_writes_and_reads_across_slots(
    cluster_client: ClusterClient, unique: str
) -> None:
    store = KeyStore(cluster_client, f"test:{unique}:")
    states = [new_key(project=f"proj_{i}")[1] for i in range(20)]
    await store.apply(states)
    for state in states:
        assert await store.lookup(state.key_hash) == state
    slots = {cluster_client.keyslot(store.state_key(s.key_id)) for s in states}
    assert len(slots) > 5, "the keys spread over the cluster's slots"
    rotated = states[0].model_copy(update={"version": 2, "key_hash": "e" * 64})
    await store.apply([rotated])
    held = await store.lookup(states[0].key_hash)
    assert held is not None
    assert held.version == 2, "the old secret's hash now holds the state that no longer names it"
    nodes = subscription_urls("redis://127.0.0.1:1", cluster_client)
    assert len(nodes) >= 4  # the configured one, then every node the client knows (masters)


async def test_the_policy_scripts_run_on_one_slot_each(
    cluster_client: ClusterClient, unique: str
) -> None:
    counters = RedisCounters(cluster_client)
    _, state = new_key(
        rate_limits=RateLimits(requests_per_minute=3),
        project_rate_limits=RateLimits(requests_per_minute=100, tokens_per_minute=10**6),
    )
    plan = Planner(f"test:{unique}:").plan(state, None, None, 10, datetime.now(UTC))
    outcomes = [(await counters.admit(plan, f"r{i}", 1000, T0)).outcome for i in range(4)]
    assert outcomes == [ADMITTED, ADMITTED, ADMITTED, OVER_RATE]
    await counters.settle([(plan, "r0", T0 // 1000, 9, 0)] * 3)
    rates, _ = await counters.peek(plan, T0)
    assert rates[0] == (3, 61_000)
