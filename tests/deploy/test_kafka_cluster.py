"""The three-node KRaft cluster of ``TOLLGATE_CLUSTER=1 make up``: Tollgate's topics replicated
three times with two in sync, and writes with ``acks=all`` that go on through one broker's
SIGKILL, with nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.kafka_cluster import KafkaCluster
from deploy.ports import free_port
from shared.kafka import Replication, ensure_topics, idempotent_producer
from shared.topics import USAGE_EVENTS
from tests.polling import eventually

pytestmark = pytest.mark.cluster

PREFIX = "cluster-test."
TOPIC = PREFIX + USAGE_EVENTS


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes of this module's own, on free ports."""
    run: Path = tmp_path_factory.mktemp("kafka-cluster")
    cluster = KafkaCluster(run, [free_port() for _ in range(3)], [free_port() for _ in range(3)])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return list(described[0]["partitions"])


async def _min_insync(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {e[0]: e[1] for a in answers for r in a.resources for e in r[4]}
    return str(entries["min.insync.replicas"])


async def _produce(bootstrap: str, values: list[bytes]) -> None:
    producer = idempotent_producer(bootstrap, "cluster-test", request_timeout_ms=15_000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC, value, key=value, partition=0)
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        consumer.assign([TopicPartition(TOPIC, 0)])
        await consumer.seek_to_beginning(TopicPartition(TOPIC, 0))
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got += [m.value for records in batch.values() for m in records if m.value]
    finally:
        await consumer.stop()
    return got


async def _wait_isr(bootstrap: str, size: int, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partitions = await _partitions(bootstrap, TOPIC)
        if all(len(p["isr"]) == size for p in partitions):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{TOPIC}: in-sync replicas not {size} after {timeout}s")


@pytest.mark.slow
async def test_topics_replicated_and_writes_survive_a_broker_sigkill(
    kafka_cluster: KafkaCluster,
) -> None:
    bootstrap = kafka_cluster.bootstrap
    assert kafka_cluster.brokers() == {1, 2, 3}
    assert kafka_cluster.active_controller() in {1, 2, 3}

    await ensure_topics(bootstrap, prefix=PREFIX, replication=Replication(3, 2))
    # A topic created a moment ago may not be in the answering broker's metadata yet.
    partitions = await eventually(
        lambda: _partitions(bootstrap, TOPIC), until=bool, timeout=15, what="partitions"
    )
    assert partitions
    assert all(len(p["replicas"]) == 3 for p in partitions)
    assert await _min_insync(bootstrap, TOPIC) == "2"
    # A second look at the same topics finds them as they should be.
    await ensure_topics(bootstrap, prefix=PREFIX, replication=Replication(3, 2))

    before = [f"before-{i}".encode() for i in range(50)]
    await _produce(bootstrap, before)
    assert await _consume_all(bootstrap, len(before)) == before

    # The leader of the partition we write to dies without a controlled shutdown.
    leader = next(int(p["leader"]) for p in partitions if p["partition"] == 0)
    await asyncio.to_thread(kafka_cluster.kill, leader)
    during = [f"during-{i}".encode() for i in range(50)]
    await _produce(bootstrap, during)  # acks=all with two of three in sync
    assert await _consume_all(bootstrap, 100) == before + during

    await asyncio.to_thread(kafka_cluster.start_node, leader)
    assert kafka_cluster.brokers() == {1, 2, 3}
    await _wait_isr(bootstrap, 3)
    after = [f"after-{i}".encode() for i in range(10)]
    await _produce(bootstrap, after)
    assert await _consume_all(bootstrap, 110) == before + during + after
