"""The real broker: idempotent producing, consumer groups, committed offsets, compaction."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from deploy.stack import Endpoints
from services.gateway.settings import GatewaySettings
from shared.kafka import Replication, TopicMismatch, ensure_topics, idempotent_producer
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS, TOPICS, USAGE_EVENTS, with_usage_partitions
from tests.polling import eventually


def _consumer(endpoints: Endpoints, group: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        batch = await consumer.getmany(timeout_ms=10_000)
        assert batch, f"timed out after {len(got)} of {count} records"
        for records in batch.values():
            got.extend(r.value for r in records if r.value is not None)
    return got


async def test_idempotent_producer_and_group_offsets_survive_restart(
    endpoints: Endpoints, topic_prefix: str, unique: str
) -> None:
    topic = topic_prefix + USAGE_EVENTS
    producer = idempotent_producer(endpoints.kafka_bootstrap, f"test-{unique}")
    await producer.start()
    try:
        # The broker handed out a producer id: idempotence is on at the protocol level.
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0
        for i in range(20):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 4}".encode())
    finally:
        await producer.stop()

    group = f"group-{unique}"
    first = _consumer(endpoints, group, topic)
    await first.start()
    try:
        seen = await _read(first, 12)
        # Commit exactly what was read so far, then "crash" by stopping.
        positions = {tp: await first.position(tp) for tp in first.assignment()}
        await first.commit()
    finally:
        await first.stop()

    second = _consumer(endpoints, group, topic)
    await second.start()
    try:
        for tp, position in positions.items():
            assert await second.committed(tp) == position
        rest = await _read(second, 20 - len(seen))
    finally:
        await second.stop()
    assert sorted(seen + rest) == sorted(f"m{i}".encode() for i in range(20))


async def test_keys_topic_is_compacted(endpoints: Endpoints, topic_prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()

    async def configs() -> dict[str, str]:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_prefix + KEYS_EVENTS)]
        )
        return {entry[0]: entry[1] for entry in described[0].resources[0][4]}

    try:
        # A topic created a moment ago may describe with no entries until the broker that
        # answers has it in its metadata.
        found = await eventually(configs, until=lambda c: "cleanup.policy" in c, what="configs")
        topics = await admin.describe_topics([topic_prefix + USAGE_EVENTS])
    finally:
        await admin.close()
    assert found["cleanup.policy"] == "compact"
    assert len(topics[0]["partitions"]) == 6


async def test_committed_offset_is_per_partition(
    endpoints: Endpoints, topic_prefix: str, unique: str
) -> None:
    topic = topic_prefix + KEYS_EVENTS
    producer = idempotent_producer(endpoints.kafka_bootstrap, f"test-{unique}")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"v1", key=b"key-1", partition=0)
    finally:
        await producer.stop()
    consumer = _consumer(endpoints, f"g-{unique}", topic)
    await consumer.start()
    try:
        await _read(consumer, 1)
        tp = TopicPartition(topic, 0)
        await consumer.commit({tp: meta.offset + 1})
        assert await consumer.committed(tp) == meta.offset + 1
    finally:
        await consumer.stop()


async def test_existing_topics_with_other_settings_are_reported_not_used(
    endpoints: Endpoints, topic_prefix: str
) -> None:
    bootstrap = endpoints.kafka_bootstrap
    topic_prefix += "byhand."  # the fixture's own topics exist already, as Tollgate makes them
    usage = next(t for t in TOPICS if t.name == USAGE_EVENTS)
    keys = next(t for t in TOPICS if t.name == KEYS_EVENTS)
    # Someone created them by hand: usage without retention's policy, keys with 2 partitions
    # and without compaction.
    await ensure_topics(
        bootstrap,
        [
            replace(usage, configs={"cleanup.policy": "compact"}),
            replace(keys, partitions=2, configs={"cleanup.policy": "delete"}),
        ],
        prefix=topic_prefix,
    )

    async def mismatch() -> str:
        try:
            await ensure_topics(bootstrap, [usage, keys], prefix=topic_prefix)
        except TopicMismatch as exc:
            return str(exc)
        return ""

    message = await eventually(mismatch, until=lambda m: "cleanup.policy" in m, what="report")
    assert f"{topic_prefix}{USAGE_EVENTS}: cleanup.policy=compact, not delete" in message
    assert f"{topic_prefix}{KEYS_EVENTS}: 2 partitions, not 3" in message
    assert f"{topic_prefix}{KEYS_EVENTS}: cleanup.policy=delete, not compact" in message
    # A caller checks only the topics it uses: the feeder reads keys.events alone.
    await ensure_topics(bootstrap, [usage], prefix=topic_prefix, checked=(AUDIT_EVENTS,))
    # As Tollgate creates them, they pass.
    await ensure_topics(bootstrap, [usage], prefix=topic_prefix + "fresh.")
    await ensure_topics(bootstrap, [usage], prefix=topic_prefix + "fresh.")


async def test_usage_events_grows_to_the_partitions_asked_and_never_shrinks(
    endpoints: Endpoints, topic_prefix: str
) -> None:
    bootstrap = endpoints.kafka_bootstrap
    topic_prefix += "grow."
    usage = next(t for t in with_usage_partitions(6) if t.name == USAGE_EVENTS)
    await ensure_topics(bootstrap, [usage], prefix=topic_prefix)

    async def partitions() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (topic,) = await admin.describe_topics([topic_prefix + USAGE_EVENTS])
            return len(topic["partitions"])
        finally:
            await admin.close()

    # As a service starting later finds it: created, and known to the broker's metadata.
    await eventually(partitions, until=lambda n: n == 6, what="usage.events created")
    await ensure_topics(bootstrap, with_usage_partitions(9), prefix=topic_prefix)
    await eventually(partitions, until=lambda n: n == 9, what="usage.events grown to 9")
    # A service still asking for 6 takes the 9 as they are; other topics are exact.
    await ensure_topics(bootstrap, with_usage_partitions(6), prefix=topic_prefix)
    assert await partitions() == 9
    settings = GatewaySettings(
        internal_token=SecretStr("x" * 32),
        state_mac_keys=SecretStr("k1:" + "m" * 32),
        usage_partitions=9,
    )
    assert settings.topics == with_usage_partitions(9)


async def test_a_replication_factor_above_the_brokers_is_a_clear_error(
    endpoints: Endpoints, topic_prefix: str
) -> None:
    with pytest.raises(TopicMismatch, match="fewer brokers"):
        await ensure_topics(
            endpoints.kafka_bootstrap, prefix=topic_prefix + "rf3.", replication=Replication(3, 2)
        )


@pytest.mark.unit
def test_min_insync_replicas_cannot_pass_the_replication_factor() -> None:
    with pytest.raises(ValueError, match="at most TOPIC_REPLICATION_FACTOR"):
        GatewaySettings(
            internal_token=SecretStr("x" * 32),
            state_mac_keys=SecretStr("k1:" + "m" * 32),
            topic_replication_factor=1,
            topic_min_insync_replicas=2,
        )
    with pytest.raises(ValueError, match=r"min\.insync\.replicas"):
        Replication(1, 2)
    assert GatewaySettings(
        internal_token=SecretStr("x" * 32),
        state_mac_keys=SecretStr("k1:" + "m" * 32),
        topic_replication_factor=3,
        topic_min_insync_replicas=2,
    ).replication == Replication(3, 2)
