"""Dead letters of the ledger consumers: the original bytes and the reason, on the DLQ topic."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.events import DeadLetter, utc_now
from shared.ledger_retry import backoff
from shared.ledger_types import ConsumerConfig

log = logging.getLogger(__name__)


def dead_letter(config: ConsumerConfig, record: Any, reason: str) -> DeadLetter:
    """The dead letter of one consumer record."""
    return DeadLetter(
        occurred_at=utc_now(),
        consumer_group=config.group_id,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        reason=reason,
        payload_base64=base64.b64encode(record.value or b"").decode(),
    )


async def send_dead_letters(
    producer: AIOKafkaProducer, config: ConsumerConfig, poison: Sequence[tuple[Any, str]]
) -> None:
    """Send every dead letter and wait for the broker's acknowledgement, retrying until then.

    The batch's offsets are stored only after this returns: a crash in between sends a
    dead letter twice (same source partition and offset), never loses one.
    """
    attempt = 0
    while True:
        try:
            futures = []
            for record, reason in poison:
                letter = dead_letter(config, record, reason)
                futures.append(
                    await producer.send(config.dlq_topic, letter.to_bytes(), key=record.key)
                )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            attempt += 1
            log.warning("dead letters not acknowledged, retrying", extra={"error": repr(exc)})
            await asyncio.sleep(max(0.2, backoff(attempt, cap=10.0)))
        else:
            for record, reason in poison:
                log.warning(
                    "dead letter",
                    extra={
                        "reason": reason,
                        "partition": record.partition,
                        "offset": record.offset,
                    },
                )
            return
