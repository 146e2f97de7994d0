"""A secured three-node Kafka (SASL_SSL among brokers too, SCRAM users, ACLs): topics
replicated three times, a service writes and reads as its own user with acks=all, and a
node's death loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from deploy.ports import free_port
from deploy.secure import SecureEngines, SecureKafkaCluster, scram_access
from shared.kafka import Replication, ensure_topics, idempotent_producer
from shared.kafka_security import KafkaAccess, kafka_options

pytestmark = [pytest.mark.secure, pytest.mark.slow]


@pytest.fixture(scope="module")
def kafka(
    engines: SecureEngines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureKafkaCluster]:
    run = tmp_path_factory.mktemp("secure-kafka-cluster")
    found = SecureKafkaCluster(
        run,
        [free_port() for _ in range(3)],
        [free_port() for _ in range(3)],
        engines.pki,
        engines.passwords,
    )
    found.start()
    try:
        asyncio.run(ensure_topics(found.client, replication=Replication(3, 2)))
        found.grant()
        yield found
    finally:
        found.stop()


def as_user(kafka: SecureKafkaCluster, engines: SecureEngines, user: str) -> KafkaAccess:
    return scram_access(kafka.bootstrap, user, engines.pki, engines.passwords)


async def _send(access: KafkaAccess, topic: str, values: list[bytes]) -> None:
    producer = idempotent_producer(access, f"cluster-{uuid.uuid4().hex[:6]}")
    try:
        await asyncio.wait_for(producer.start(), 30)
        for value in values:
            await asyncio.wait_for(producer.send_and_wait(topic, value, partition=0), 30)
    finally:
        await producer.stop()


async def _read(access: KafkaAccess, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(**kafka_options(access), enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), 30)
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        out: list[bytes] = []
        while len(out) < end:
            batch = await asyncio.wait_for(consumer.getmany(partition, timeout_ms=1000), 30)
            out += [r.value or b"" for r in batch.get(partition, [])]
        return out
    finally:
        await consumer.stop()


async def test_a_secured_cluster_keeps_what_it_acknowledged(
    kafka: SecureKafkaCluster, engines: SecureEngines
) -> None:
    gateway = as_user(kafka, engines, "gateway")
    metering = as_user(kafka, engines, "metering")
    marker = uuid.uuid4().hex.encode()
    await _send(gateway, "usage.events", [marker + b"-1"])
    kafka.kill(3)
    try:
        await _send(gateway, "usage.events", [marker + b"-2"])  # acks=all: two in sync still
        got = [v for v in await _read(metering, "usage.events") if v.startswith(marker)]
        assert got == [marker + b"-1", marker + b"-2"]
    finally:
        kafka.start_node(3)
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(gateway, "keys.events", [b"{}"])
