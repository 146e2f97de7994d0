"""Large publish calls go out as batches built per partition: on the partitions aiokafka's
``send`` would pick, each key's records in order, every one delivered once; small calls stay
record by record."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from deploy.stack import Endpoints
from services.gateway.usage.produce_batches import MIN_PER_PARTITION, Message, Partitioner, build
from services.gateway.usage.publisher import Publisher
from shared.kafka import ensure_topics
from shared.topics import TOPICS, USAGE_EVENTS


@pytest.mark.unit
def test_the_partitioner_picks_what_aiokafka_picks_and_forgets_on_a_new_count() -> None:
    default = DefaultPartitioner()
    mine = Partitioner(max_keys=50)
    keys = [f"key_{random.getrandbits(64):016x}".encode() for _ in range(200)]
    for count in (6, 6, 12, 3):
        partitions = list(range(count))
        for key in keys:
            assert mine(key, partitions) == default(key, partitions, partitions)
    assert len(mine._known) <= 50


@pytest.mark.unit
async def test_small_calls_are_not_batched_and_big_ones_are_split_by_partition() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started
    try:
        _split_by_partition(producer)
    finally:
        await producer.stop()


def _split_by_partition(producer: AIOKafkaProducer) -> None:
    partitioner = Partitioner()
    partitions = list(range(6))
    small = [(b"key_%d" % i, b"{}") for i in range(MIN_PER_PARTITION * 6 - 1)]
    assert build(producer, small, partitions, partitioner) is None
    big: list[Message] = [(b"key_%d" % (i % 40), b'{"n": %d}' % i) for i in range(600)]
    large = (b"key_7", b"x" * 40_000)  # larger than a batch (16 KiB): a batch of its own
    big.insert(300, large)
    built = build(producer, big, partitions, partitioner)
    assert built is not None
    batches, alone = built
    assert not alone
    assert [b.messages for b in batches if large in b.messages] == [[large]]
    placed = [m for b in batches for m in b.messages]
    assert sorted(placed) == sorted(big)
    for batch in batches:
        assert {partitioner(m[0], partitions) for m in batch.messages} == {batch.partition}
    assert len({b.partition for b in batches}) == 6
    # Each key's records keep their order within its partition's batches.
    for key in {m[0] for m in big}:
        assert [m for b in batches for m in b.messages if m[0] == key] == [
            m for m in big if m[0] == key
        ]


class CountingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A real producer that counts how records were handed to it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sends = 0
        self.batches = 0

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        self.sends += 1
        return await super().send(*args, **kwargs)

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.batches += 1
        return await super().send_batch(*args, **kwargs)


async def test_a_large_call_lands_where_send_would_put_it_in_order(
    endpoints: Endpoints, unique: str
) -> None:
    prefix = f"test-{unique}-batches."
    await ensure_topics(endpoints.kafka_bootstrap, TOPICS, prefix=prefix)
    topic = prefix + USAGE_EVENTS
    producers: list[CountingProducer] = []

    def new_producer() -> AIOKafkaProducer:
        producers.append(CountingProducer(bootstrap_servers=endpoints.kafka_bootstrap))
        return producers[-1]

    publisher = Publisher(
        endpoints.kafka_bootstrap, topic, delivery_timeout_s=10.0, new_producer=new_producer
    )
    messages: list[Message] = [(b"key_%02d" % (i % 25), b'{"n": %d}' % i) for i in range(1000)]
    try:
        small = await publisher.publish(messages[:10])
        outcome = await publisher.publish(messages[10:])
    finally:
        await publisher.stop()
    assert (small.delivered, outcome.delivered) == (10, 990)
    assert (outcome.unsent, outcome.refused) == ([], [])
    (producer,) = producers
    assert producer.sends == 10, "a small call goes record by record, a large one not at all"
    assert 1 <= producer.batches <= 30, "a large one as a few batches per partition"

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=endpoints.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: dict[bytes, list[bytes]] = defaultdict(list)
    where: dict[bytes, set[int]] = defaultdict(set)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        total = 0
        while total < 1000:
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, f"only {total} of 1000 records arrived"
            for tp, records in batch.items():
                for record in records:
                    got[record.key].append(record.value)
                    where[record.key].add(tp.partition)
                    total += 1
    finally:
        await consumer.stop()
    default = DefaultPartitioner()
    for key, values in got.items():
        assert values == [v for k, v in messages if k == key], "in order, each once"
        assert where[key] == {default(key, partitions, partitions)}


@pytest.mark.unit
async def test_the_gateway_producer_batches_a_full_emitter_call_in_one_request_a_partition() -> (
    None
):
    """aiokafka sends one batch per partition per request: with its 16 KiB default, a call
    of 1,200 usage events would need five round trips and the publisher fell behind a
    gateway running flat out (measured: 63,934 of 600,000 requests refused with 503)."""
    publisher = Publisher("127.0.0.1:1", "usage.events", delivery_timeout_s=1.0)
    producer = publisher._new_producer()  # never started
    try:
        partitions = list(range(6))
        messages = [(b"key_%02d" % (i % 40), b"e" * 420) for i in range(1200)]
        built = build(producer, messages, partitions, Partitioner())
        assert built is not None
        batches, _ = built
        assert len(batches) <= len(partitions), [len(b.messages) for b in batches]
    finally:
        await producer.stop()
