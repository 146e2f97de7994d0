"""A secured Redis Cluster (TLS on clients, the bus and replication; ACL users on every node):
the service's cluster client reaches every node over TLS as its ACL user, a failover
included; plaintext, a wrong password and another CA are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError

from deploy.pki import ensure_pki
from deploy.ports import free_port
from deploy.secure import SecureEngines, SecureRedisCluster
from shared.engine_checks import EngineRefused, check_redis
from shared.redis_client import RedisAuth, connect

pytestmark = [pytest.mark.secure, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(
    engines: SecureEngines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureRedisCluster]:
    """Six nodes (three masters, a replica each) on free ports, stopped afterwards."""
    run = tmp_path_factory.mktemp("secure-redis-cluster")
    ports = [free_port() for _ in range(6)]
    found = SecureRedisCluster(run, ports, engines.pki, engines.passwords)
    found.bus_ports = {port: free_port() for port in ports}
    found.start()
    yield found
    found.stop()


async def test_the_cluster_client_reaches_every_node_over_tls(
    cluster: SecureRedisCluster, engines: SecureEngines
) -> None:
    auth = engines.redis_auth("gateway")
    await check_redis(cluster.url, auth, cluster=True)
    client = connect(cluster.url, cluster=True, timeout_s=5, auth=auth)
    try:
        # Keys spread over every slot range, so every master is written.
        for i in range(60):
            await client.set(f"tollgate:{{k{i}}}", str(i))
        assert [await client.get(f"tollgate:{{k{i}}}") for i in range(60)] == [
            str(i).encode() for i in range(60)
        ]
        # A master dies: its replica takes over over TLS, and the client follows.
        victim = cluster.masters()[0]
        cluster.kill_node(victim)
        cluster.wait_failover(victim)
        for _ in range(50):
            try:
                values = [await client.get(f"tollgate:{{k{i}}}") for i in range(60)]
                break
            except (RedisError, RedisClusterException, OSError):
                await asyncio.sleep(0.2)
        assert values == [str(i).encode() for i in range(60)]
    finally:
        await client.aclose()
        cluster.start_node(victim)


async def test_the_cluster_refuses_plaintext_wrong_passwords_and_other_cas(
    cluster: SecureRedisCluster, engines: SecureEngines, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = connect(cluster.url.replace("rediss://", "redis://"), cluster=True, timeout_s=2)
    with pytest.raises((RedisError, RedisClusterException, OSError)):
        await plain.ping()
    wrong = RedisAuth(ca_certs=engines.pki.ca, username="gateway", password=SecretStr("wrong"))
    with pytest.raises(EngineRefused, match="REDIS_USERNAME and REDIS_PASSWORD"):
        await check_redis(cluster.url, wrong, cluster=True)
    client = connect(cluster.url, cluster=True, timeout_s=5, auth=wrong)
    with pytest.raises((AuthenticationError, RedisClusterException)):
        await client.ping()
    other = ensure_pki(tmp_path_factory.mktemp("cluster-other-ca"))
    untrusted = RedisAuth(
        ca_certs=other.ca, username="gateway", password=SecretStr(engines.passwords["gateway"])
    )
    with pytest.raises(EngineRefused, match="REDIS_SSL_CA_CERTS"):
        await check_redis(cluster.url, untrusted, cluster=True)
