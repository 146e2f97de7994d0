"""Faults on the cluster (issue 14, item 4): steady traffic through two gateways on a three-node
KRaft cluster and a Redis Cluster of three masters with a replica each, into two replicas each
of metering and billing, while the Kafka active controller, then another broker, then the Redis
master serving a project's slot, then the metering replica and then the billing replica that
own the test's partitions are each killed with SIGKILL and brought back. After each fault the
clients pause, and the Usage and Costs APIs equal exactly what the clients were told so far
(nothing lost, nothing counted twice); no valid key was refused at any time.

The bound on refusals is the gateway README's: a valid key is refused (401) never, and 503 is
answered only when usage cannot be kept (a full spool) or no source can vouch for a key for
``STALE_KEY_MAX_S``; neither happens here, since Kafka and Redis each lose one node only, so
the bound is zero refused answers. The clusters are the test's own, on free ports under tmp;
PostgreSQL is the session's (this test's own schemas).

A killed metering or billing replica is brought back, as an orchestrator restarts a crashed
pod: its group rebalances twice, once to hand the dead member's partitions (and the rows they
own) to the survivor, once to give some back to a member that reads its offsets from
PostgreSQL afresh; both hand-overs must keep the ledgers exact, and the next fault starts from
the deployed shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio.cluster import RedisCluster as ClusterClient

from deploy.kafka_cluster import KafkaCluster
from deploy.ports import free_port
from deploy.redis_cluster import RedisCluster
from deploy.stack import Endpoints
from deploy.system import replica_name
from shared.kafka import Replication, ensure_topics
from shared.redis_client import connect
from tests.chaos.groups import busy_partitions, stable_with
from tests.chaos.ledgers import (
    accepted_everywhere,
    admin_api,
    ledgers_equal_told,
    make_keys,
    watch_spools,
)
from tests.chaos.traffic import Key, Tally, client_loop
from tests.e2e.system import Process, System, start_system
from tests.polling import eventually

CLIENTS = 4
REPLICAS = 2  # of metering and of billing
RATE = 3.0  # requests a second per client: 12 a second over both gateways
DOWNTIME_S = 3.0  # how long each Kafka victim stays dead before its restart begins
SETTLE_S = 2.0  # traffic before the first fault, between faults and after the last
REPLICATION = Replication(3, 2)
CLUSTER = {
    "REDIS_CLUSTER": "true",
    "TOPIC_REPLICATION_FACTOR": str(REPLICATION.factor),
    "TOPIC_MIN_INSYNC_REPLICAS": str(REPLICATION.min_insync),
}
# Consumers that rejoin their group after a SIGKILL wait for the dead member's session.
CONSUMER = {**CLUSTER, "SESSION_TIMEOUT_MS": "6000", "MAX_BATCH": "200"}
# Generous: every request of the first project runs the rate-limit script on its slot, and
# none is ever limited (not even on one replica's share while Redis fails over).
LIMITS = {"rate_limits": {"requests_per_minute": 1_000_000}}
GROUPS = ("metering", "billing")


@dataclass
class Refusals(Tally):
    """The tally, and every answer that refused a valid key, with the fault under way."""

    phase: str = "before the faults"
    refused: list[tuple[str, str, int]] = field(default_factory=list)

    def failed(self, key_id: str, status: int) -> None:
        if status == 401 or status >= 500:
            self.refused.append((self.phase, key_id, status))
        super().failed(key_id, status)


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[tuple[KafkaCluster, RedisCluster]]:
    """Three KRaft nodes and six Redis Cluster nodes of the test's own, on free ports."""
    run = tmp_path / "run"
    kafka = KafkaCluster(run, [free_port() for _ in range(3)], [free_port() for _ in range(3)])
    redis = RedisCluster(
        run, [free_port() for _ in range(6)], bus_ports=[free_port() for _ in range(6)]
    )
    try:
        redis.start()
        kafka.start()
        yield kafka, redis
    finally:
        kafka.stop()
        redis.stop()


async def _lagging(bootstrap: str, prefix: str) -> list[str]:
    """Partitions of the test's topics and of the group offsets missing an in-sync replica;
    asked of a fresh client each time (one made before a restart may still point at the dead
    connection)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        described = await admin.describe_topics([*names, "__consumer_offsets"])
    except (KafkaError, OSError, TimeoutError) as exc:
        return [f"the cluster did not answer: {type(exc).__name__}: {exc}"]
    finally:
        await admin.close()
    lagging = [
        f"{t['topic']}/{p['partition']}"
        for t in described
        for p in t["partitions"]
        if len(p["isr"]) < len(p["replicas"])
    ]
    return lagging if names else ["no topic of the test listed"]


async def _wait_in_sync(bootstrap: str, prefix: str, timeout: float = 60.0) -> None:
    """Until every partition has all its replicas in sync again: the next fault then tests
    one node down, not two."""
    await eventually(
        lambda: _lagging(bootstrap, prefix),
        until=lambda lagging: not lagging,
        timeout=timeout,
        interval=0.5,
        what="every partition back in sync",
    )


async def _slot_holder(redis: RedisCluster, project_id: str) -> int:
    """The port of the master that serves the project's hash tag now; it must hold the
    project's rate-limit counters, or killing it would test nothing of the scripts."""
    finder = connect(redis.url, cluster=True, timeout_s=2.0)
    assert isinstance(finder, ClusterClient)
    try:
        await finder.initialize()
        node = finder.get_node_from_key(f"{{{project_id}}}")
        assert node is not None
        counters = await finder.keys(f"*rl:{{{project_id}}}:*", target_nodes=node)
        assert counters, f"no rate-limit counter of {project_id} on {node.port}"
        return int(node.port)
    finally:
        await finder.aclose()


async def _limit(system: System, key: Key) -> None:
    async with admin_api(system, "keys") as keys_api:
        got = await keys_api.patch(f"/v1/projects/{key.project_id}", json=LIMITS)
        assert got.status_code == 200, got.text


Fault = tuple[str, Callable[[], Awaitable[None]]]


def _owner(system: System, service: str, held: dict[str, set[int]], busy: set[int]) -> Process:
    """The replica of the service that holds a partition the test's events went to (each
    replica's client id ends with its PID)."""
    for i in range(REPLICAS):
        process = system.processes[replica_name(i, service)]
        assert process.child is not None
        mine = [p for c, p in held.items() if c.endswith(f"-{process.child.pid}")]
        if mine and mine[0] & busy:
            return process
    raise AssertionError(f"no {service} replica holds a busy partition: {held}, busy {busy}")


def _faults(
    kafka: KafkaCluster, redis: RedisCluster, system: System, project_id: str, prefix: str
) -> list[Fault]:
    """Each fault: its SIGKILL, the pause or failover, the restart, until whole again."""
    victims: list[int] = []
    group = {s: system.processes[s].env[f"TOLLGATE_{s.upper()}_CONSUMER_GROUP"] for s in GROUPS}

    async def broker(node: int) -> None:
        await asyncio.to_thread(kafka.kill, node)
        victims.append(node)
        await asyncio.sleep(DOWNTIME_S)
        await asyncio.to_thread(kafka.start_node, node)
        await _wait_in_sync(kafka.bootstrap, prefix)

    async def controller() -> None:
        await broker(await asyncio.to_thread(kafka.active_controller))

    async def other_broker() -> None:
        leader = await asyncio.to_thread(kafka.active_controller)
        await broker(next(n.node_id for n in kafka.nodes if n.node_id not in {leader, *victims}))

    async def redis_master() -> None:
        holder = await _slot_holder(redis, project_id)
        await asyncio.to_thread(redis.kill_node, holder)
        await asyncio.to_thread(redis.wait_failover, holder, 30)
        await asyncio.sleep(SETTLE_S)  # traffic on the promoted replica, the node still dead
        await asyncio.to_thread(redis.start_node, holder)
        await asyncio.to_thread(redis.wait_ok, 30)

    async def replica(service: str) -> None:
        held = await stable_with(kafka.bootstrap, group[service], REPLICAS)
        busy = await busy_partitions(kafka.bootstrap, group[service])
        victim = _owner(system, service, held, busy)
        await asyncio.to_thread(victim.kill)
        # The survivor takes every partition once the dead member's session has expired.
        await stable_with(kafka.bootstrap, group[service], REPLICAS - 1)
        await asyncio.sleep(SETTLE_S)  # traffic on the survivor alone
        await asyncio.to_thread(victim.start)
        await stable_with(kafka.bootstrap, group[service], REPLICAS)

    async def metering() -> None:
        await replica("metering")

    async def billing() -> None:
        await replica("billing")

    return [
        ("kafka active controller", controller),
        ("another kafka broker", other_broker),
        ("redis master of the project's slot", redis_master),
        ("metering replica of the test's partitions", metering),
        ("billing replica of the test's partitions", billing),
    ]


def _last_traceback(system: System) -> str:
    """The last traceback in a gateway's log: a 500 is an exception the gateway did not map."""
    for name, process in system.processes.items():
        text = process.log.read_text(errors="replace") if name.startswith("gateway") else ""
        if "Traceback" in text:
            return f"\n{name}: " + text[text.rindex("Traceback") :][:3000]
    return ""


async def _with_traffic(
    gateways: list[str], keys: list[Key], tally: Refusals, deepest: dict[str, int], fault: Fault
) -> tuple[int, float]:
    """Clients send all along while the fault runs between two settling spells; the answers
    given during the fault and how long it took."""
    name, run = fault
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(client_loop(i, gateways, keys, rate=RATE, stop=stop, tally=tally))
        for i in range(CLIENTS)
    ]
    tasks.append(asyncio.create_task(watch_spools(gateways, stop, deepest)))
    try:
        # Deliberate durations, not waits for an outcome: traffic flows all along.
        tally.phase = f"before {name}"
        await asyncio.sleep(SETTLE_S)
        tally.phase, before, at = name, tally.answers, time.monotonic()
        await run()
        answered, took = tally.answers - before, time.monotonic() - at
        tally.phase = f"after {name}"
        await asyncio.sleep(SETTLE_S)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return answered, took


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_ledgers_equal_what_clients_were_told_through_cluster_faults(
    clusters: tuple[KafkaCluster, RedisCluster],
    endpoints: Endpoints,
    unique: str,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    kafka, redis = clusters
    prefix = f"cluster-{unique}."
    await ensure_topics(kafka.bootstrap, prefix=prefix, replication=REPLICATION)
    on_clusters = Endpoints(kafka.bootstrap, endpoints.database_url, redis.url)
    settings = {"keys": CLUSTER, "gateway": CLUSTER, "metering": CONSUMER, "billing": CONSUMER}
    system = await asyncio.to_thread(
        start_system, on_clusters, prefix, unique, tmp_path,
        gateways=2, consumers=REPLICAS, settings=settings,
    )  # fmt: skip
    try:
        keys = await make_keys(system, ("cluster-a", "cluster-b"))
        await _limit(system, keys[0])
        gateways = [system.url("gateway"), system.url("gateway-1")]
        await accepted_everywhere(gateways, keys)
        start = int(time.time()) - 3600
        ready_s = time.monotonic() - began

        tally = Refusals()
        deepest: dict[str, int] = {}
        answered: dict[str, int] = {}
        took: dict[str, float] = {}
        caught_up: dict[str, float] = {}
        for fault in _faults(kafka, redis, system, keys[0].project_id, prefix):
            name = fault[0]
            answered[name], took[name] = await _with_traffic(gateways, keys, tally, deepest, fault)
            # The clients paused: the ledgers must equal everything told so far.
            at = time.monotonic()
            await ledgers_equal_told(system, keys, start, tally)
            caught_up[name] = time.monotonic() - at
        summary = (
            f"ready in {ready_s:.0f}s, in all {time.monotonic() - began:.0f}s, "
            f"{tally.answers} answers, during each fault {answered}, each fault took "
            f"{ {k: round(v, 1) for k, v in took.items()} }, the ledgers caught up in "
            f"{ {k: round(v, 1) for k, v in caught_up.items()} }, deepest spools {deepest}, "
            f"unmetered {dict(tally.unmetered)}, refused {tally.refused[:10]}, "
            f"told {tally.by_key}"
        )
        print(summary)

        assert not tally.unknown, f"answers whose count the client cannot know: {tally.unknown[:5]}"
        assert all(n > 0 for n in answered.values()), summary
        assert not tally.refused, f"valid keys refused: {summary}{_last_traceback(system)}"
    finally:
        await asyncio.to_thread(system.stop)
