"""Dead letters are bounded: a record too big for the DLQ is stored truncated, with its size and
SHA-256; a letter the broker refuses for good is dropped, logged and counted, never retried
forever; the reason has a bound.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from shared.exactly_once.dlq import MAX_REASON, DeadLetterSender, dead_letter
from shared.kafka import ensure_topics
from shared.topics import USAGE_EVENTS_DLQ
from tests.metering.harness import both, stats, stream_of, usage
from tests.metering.ledgers import Case
from tests.metering.poison import letters_by_group, noise, raw, send
from tests.private_servers import Private


def record(value: bytes, offset: int = 5) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t.usage", 2, offset, 0, 0, b"key_1", value, None, 1, len(value), ())


@pytest.mark.unit
def test_a_letter_too_big_keeps_a_prefix_with_the_size_and_sha256() -> None:
    value = noise(100_000).encode()
    letter = dead_letter("metering", record(value), "why", max_bytes=5000)
    assert len(letter.to_bytes()) <= 5000
    assert letter.truncated
    assert letter.original_size == len(value)
    assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
    kept = base64.b64decode(letter.payload_base64)
    assert len(kept) > 3000
    assert value.startswith(kept)
    whole = dead_letter("metering", record(b"small"), "why", max_bytes=5000)
    assert not whole.truncated
    assert base64.b64decode(whole.payload_base64) == b"small"


@pytest.mark.unit
def test_the_reason_is_bounded_and_always_encodable() -> None:
    letter = dead_letter("metering", record(b"x"), "a\ud800b" + "r" * 50_000)
    assert len(letter.reason) <= MAX_REASON
    assert letter.reason.startswith("a\\ud800b")
    letter.to_bytes()  # no lone surrogate left to refuse


async def test_a_record_near_a_megabyte_is_dead_lettered_truncated(case: Case) -> None:
    good = stream_of(200)
    head = raw(usage(key="key_4"), model="")
    big = raw(usage(key="key_4"), model=noise(1_000_000 - len(head)))
    records = [(e.key_id.encode(), e.to_bytes()) for e in good]
    records.insert(50, (b"key_4", big))
    m_set, b_set = case.settings(max_batch=100)
    async with both(m_set, b_set) as (m, b):
        positions = await send(case.bootstrap, case.topic, records, max_request_size=2_000_000)
        await case.assert_ledgers(m, b, good)
        groups = {m_set.consumer_group: 1, b_set.consumer_group: 1}
        letters = await letters_by_group(case.bootstrap, case.prefix, groups)
        counters = [await stats(m), await stats(b)]
    at = positions[50]
    for group in groups:
        letter = letters[group][at]
        assert letter.truncated
        assert letter.original_size == len(big)
        assert letter.original_sha256 == hashlib.sha256(big).hexdigest()
        assert big.startswith(base64.b64decode(letter.payload_base64))
        assert len(letter.to_bytes()) <= m_set.max_dead_letter_bytes
    assert [c["dead_letters"] for c in counters] == [1, 1]


@pytest.fixture
async def small_dlq(case: Case) -> str:
    """A DLQ topic whose broker limit is 20 kB: letters above it are refused for good."""
    topic = case.prefix + "small.dlq"
    admin = AIOKafkaAdminClient(bootstrap_servers=case.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "20000"})]
        )
    finally:
        await admin.close()
    return topic


async def test_a_letter_the_broker_refuses_is_retried_smaller_then_given_up(
    case: Case, small_dlq: str, caplog: pytest.LogCaptureFixture
) -> None:
    def sender(fallback: int) -> DeadLetterSender:
        return DeadLetterSender(
            case.bootstrap,
            "test-dlq",
            small_dlq,
            "g",
            fallback_bytes=fallback,
        )

    huge, small = noise(100_000).encode(), b"not json"
    # First try 900 kB: refused; then 10 kB: accepted, truncated.
    first = sender(10_000)
    await first.start()
    try:
        outcome = await asyncio.wait_for(
            first.send([(record(huge, 1), "too big"), (record(small, 2), "bad")]), 30
        )
        assert (outcome.sent, outcome.lost) == (2, 0)
    finally:
        await first.stop()
    # A fallback that is still too large: given up for good, logged with its source.
    second = sender(50_000)
    await second.start()
    try:
        outcome = await asyncio.wait_for(second.send([(record(huge, 3), "too big")]), 30)
        assert (outcome.sent, outcome.lost) == (0, 1)
        assert any(
            "refused for good" in r.getMessage() and getattr(r, "offset", None) == 3
            for r in caplog.records
        )
        # The sender still works afterwards (its producer was replaced).
        outcome = await asyncio.wait_for(second.send([(record(small, 4), "bad")]), 30)
        assert (outcome.sent, outcome.lost) == (1, 0)
    finally:
        await second.stop()
    letters = (await letters_by_group(case.bootstrap, "", {"g": 3}, topic=small_dlq))["g"]
    assert set(letters) == {(2, 1), (2, 2), (2, 4)}
    assert letters[(2, 1)].truncated
    assert letters[(2, 1)].original_sha256 == hashlib.sha256(huge).hexdigest()
    assert not letters[(2, 2)].truncated


@pytest.mark.slow
async def test_dead_letters_wait_for_a_broker_that_is_down(private_kafka: Private) -> None:
    """Broker away: retriable, so the letter is retried until it is back, never dropped."""
    bootstrap = private_kafka.kafka_bootstrap
    await ensure_topics(bootstrap)
    sender = DeadLetterSender(bootstrap, "test-dlq-outage", USAGE_EVENTS_DLQ, "g")
    await sender.start()
    try:
        await private_kafka.astop()
        sending = asyncio.create_task(sender.send([(record(b"bad", 9), "why")]))
        done, _ = await asyncio.wait({sending}, timeout=8)
        assert not done, "a letter was given up while the broker was down"
        await private_kafka.astart()
        outcome = await asyncio.wait_for(sending, 60)
        assert (outcome.sent, outcome.lost) == (1, 0)
    finally:
        await sender.stop()
    letters = (await letters_by_group(bootstrap, "", {"g": 1}, topic=USAGE_EVENTS_DLQ))["g"]
    assert letters[(2, 9)].reason == "why"
