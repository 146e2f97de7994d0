"""How the plumbing sorts one fetched batch, before any database work (pure logic).

One batch spans partitions; each record is parsed on its own, so one bad record never
fails the others; a duplicate inside the batch counts once; the future tolerance is 5
minutes; every partition's next offset covers its poison too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.metering.consumer import MinuteDays
from shared.events import utc_now
from shared.exactly_once import parse_usage
from shared.exactly_once.consumer import LedgerConsumer
from shared.exactly_once.types import ConsumerConfig
from tests.metering.harness import usage

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def record(partition: int, offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", value, None, 1, 1, ())


def test_a_batch_across_partitions_is_sorted_record_by_record() -> None:
    now = utc_now()
    good, soon = usage(at=now - timedelta(days=2)), usage(at=now + timedelta(minutes=4))
    far = usage(at=now + timedelta(minutes=6))
    negative = good.model_dump_json().replace('"input_tokens":100', '"input_tokens":-1')
    batch: dict[TopicPartition, list[Any]] = {
        TopicPartition("t", 0): [
            record(0, 10, good.to_bytes()),
            record(0, 11, b"\xff not json"),
            record(0, 12, good.to_bytes()),  # a producer retry: same event id
        ],
        TopicPartition("t", 3): [
            record(3, 7, far.to_bytes()),
            record(3, 8, soon.to_bytes()),
            record(3, 9, negative.encode()),
            record(3, 10, None),
        ],
    }
    config = ConsumerConfig("x", "t", "d", "g", "c")
    no_pool: Any = None  # parsing needs no database
    consumer = LedgerConsumer(config, no_pool, parse_usage, MinuteDays(35).apply)
    prepared = consumer._prepare(batch, epoch=0)
    assert [e.event_id for e in prepared.items] == [good.event_id, soon.event_id]
    reasons = {r.offset: reason for r, reason in prepared.poison}
    assert set(reasons) == {11, 7, 9, 10}
    assert "invalid usage event" in reasons[11]
    assert "too far in the future" in reasons[7]
    assert "input_tokens: Input should be greater than or equal to 0" in reasons[9]
    assert "empty record" in reasons[10]
    assert prepared.offsets == {TopicPartition("t", 0): 13, TopicPartition("t", 3): 11}
