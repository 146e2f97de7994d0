"""The publisher's per-record outcomes against a fake broker (pure logic: which record is to
blame when Kafka refuses a whole partition batch, and what a refusal does to the sequence).

The real-Kafka counterpart (a record above the topic's max.message.bytes) is in
test_spool_kafka.py; the broker errors here (corrupt, invalid, timeouts) cannot be provoked
on a real broker on purpose.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RequestTimedOutError,
    UnknownError,
)

from services.gateway.usage.produce_batches import Message
from services.gateway.usage.publisher import Publisher

pytestmark = pytest.mark.unit  # no server: `make test-unit`

_REFUSALS: dict[bytes, type[KafkaError]] = {
    b"corrupt": CorruptRecordException,
    b"invalid": UnknownError,  # how aiokafka reports INVALID_RECORD (87)
    b"timeout": RequestTimedOutError,
}


class FakeBroker:
    """Batches records per key (one partition per key), as aiokafka's accumulator does, and
    answers per batch: a batch holding a bad record fails whole, and a failed batch leaves a
    sequence gap that fails that partition's later batches until the producer is replaced."""

    def __init__(self) -> None:
        self.topic: list[bytes] = []
        self.producers = 0

    def producer(self) -> AIOKafkaProducer:
        self.producers += 1
        return cast("AIOKafkaProducer", _FakeProducer(self))


class _FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.pending: dict[bytes, list[tuple[bytes, asyncio.Future[None]]]] = defaultdict(list)
        self.gapped: set[bytes] = set()
        self.flush_scheduled = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        if len(value) > 1000:
            raise MessageSizeTooLargeError("larger than max_request_size")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[key].append((value, future))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        for key, batch in self.pending.items():
            error: KafkaError | None = OutOfOrderSequenceNumber() if key in self.gapped else None
            for value, _ in batch:
                for marker, kind in _REFUSALS.items():
                    if marker in value and error is None:
                        error = kind()
            if error is not None and not isinstance(error, RequestTimedOutError):
                self.gapped.add(key)
            for value, future in batch:
                if error is None:
                    self.broker.topic.append(value)
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self.pending.clear()


def _messages(*values: bytes, keys: int = 3) -> list[Message]:
    return [(f"key_{i % keys}".encode(), value) for i, value in enumerate(values)]


async def test_only_records_refused_alone_are_refused_and_the_rest_delivered() -> None:
    broker = FakeBroker()
    publisher = Publisher("unused:1", "usage", 2.0, new_producer=broker.producer)
    good = [f"good-{i}".encode() for i in range(12)]
    values = [*good[:4], b"corrupt-1", *good[4:8], b"invalid-1", b"x" * 2000, *good[8:]]
    outcome = await publisher.publish(_messages(*values))
    assert sorted(broker.topic) == sorted(good), "the neighbours of a bad record got through"
    reasons = {r.line[:9]: r.reason for r in outcome.refused}
    assert reasons[b"corrupt-1"].startswith("CorruptRecordException")
    assert reasons[b"invalid-1"].startswith("UnknownError")
    assert reasons[b"x" * 9].startswith("MessageSizeTooLargeError")
    assert (outcome.delivered, outcome.unsent) == (12, [])
    assert publisher.kafka.available(), "a refused record says nothing about Kafka's health"
    assert broker.producers >= 3, "a fresh producer after each refusal (sequence gap)"


async def test_a_transient_failure_leaves_records_unsent_never_refused() -> None:
    broker = FakeBroker()
    publisher = Publisher("unused:1", "usage", 2.0, new_producer=broker.producer)
    values = (b"good-0", b"timeout-1", b"good-2", b"good-3")  # keys 0, 1, 0, 1
    outcome = await publisher.publish(_messages(*values, keys=2))
    assert outcome.refused == []
    assert sorted(v for _, v in outcome.unsent) == [b"good-3", b"timeout-1"], "its partition's"
    assert sorted(broker.topic) == [b"good-0", b"good-2"]
    assert not publisher.kafka.available(), "Kafka trouble: the spool takes over for a while"


async def test_a_gap_left_by_the_other_task_is_cured_by_a_fresh_producer() -> None:
    broker = FakeBroker()
    publisher = Publisher("unused:1", "usage", 2.0, new_producer=broker.producer)
    producer: Any = await publisher._connected()
    producer.gapped.add(b"key_0")  # as if the replayer's refused batch had used this producer
    outcome = await publisher.publish(_messages(b"good-0", b"good-1"))
    assert (outcome.delivered, outcome.unsent, outcome.refused) == (2, [], [])
    assert broker.producers == 2
