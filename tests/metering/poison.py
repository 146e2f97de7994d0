"""Records a consumer may meet that no model of ours would write: raw JSON, sent as is.

``raw`` takes a valid event and overrides fields with anything (a NUL, 10,000 random
characters, a wrong type), then serialises with ``json.dumps``, so a record stays exactly
what the test says whatever the event models accept at the time.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.events import DeadLetter, UsageRecorded
from shared.kafka import idempotent_producer
from shared.topics import USAGE_EVENTS_DLQ
from tests.polling import eventually

Position = tuple[int, int]  # partition, offset


def raw(event: UsageRecorded, **fields: Any) -> bytes:
    """The event's JSON with fields replaced (json.dumps escapes NUL as \\u0000)."""
    body = event.model_dump(mode="json") | fields
    return json.dumps(body).encode()


def noise(length: int, seed: int = 0) -> str:
    """Random letters: they do not compress, so PostgreSQL's index refuses a long one (54000)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


async def send(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], **options: Any
) -> list[Position]:
    """Send (key, value) records in order; return where each landed."""
    producer = idempotent_producer(bootstrap, "test-raw-producer", linger_ms=20, **options)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in sent]


async def letters_by_group(
    bootstrap: str, prefix: str, want: dict[str, int], timeout: float = 60, topic: str = ""
) -> dict[str, dict[Position, DeadLetter]]:
    """The DLQ's letters per consumer group, by source position, once want[group] arrived."""
    consumer = AIOKafkaConsumer(
        topic or prefix + USAGE_EVENTS_DLQ,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    got: dict[str, dict[Position, DeadLetter]] = {g: {} for g in want}
    try:

        async def more() -> dict[str, int]:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    letter = DeadLetter.model_validate_json(r.value)
                    at = (letter.source_partition, letter.source_offset)
                    got.setdefault(letter.consumer_group, {})[at] = letter
            return {g: len(got[g]) for g in want}

        await eventually(
            more,
            until=lambda n: all(n[g] >= c for g, c in want.items()),
            timeout=timeout,
            what="dead letters",
        )
    finally:
        await consumer.stop()
    return got
