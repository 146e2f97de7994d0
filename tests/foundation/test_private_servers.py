"""A private broker can be stopped and started again, keeping what it had."""

from __future__ import annotations

import pytest

from shared.kafka import broker_reachable, ensure_topics, idempotent_producer
from shared.topics import KEYS_EVENTS
from tests.private_servers import Private


@pytest.mark.slow
async def test_private_kafka_survives_a_restart(private_kafka: Private) -> None:
    await ensure_topics(private_kafka.kafka_bootstrap)
    producer = idempotent_producer(private_kafka.kafka_bootstrap, "restart-test")
    await producer.start()
    try:
        await producer.send_and_wait(KEYS_EVENTS, b"before", key=b"k")
    finally:
        await producer.stop()
    await private_kafka.astop()
    assert not await broker_reachable(private_kafka.kafka_bootstrap, timeout=1)
    await private_kafka.astart()
    assert await broker_reachable(private_kafka.kafka_bootstrap)
