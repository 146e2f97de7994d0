"""Dead letters: the original bytes (or their first part) and the reason, on the DLQ topic.

A letter is bounded so that it fits a Kafka message (``max_bytes``, by default well under
the broker's 1 MB ``message.max.bytes``): a larger value keeps only its first bytes, with
``truncated`` set; every letter carries the whole value's size and SHA-256. The reason is
bounded too (``MAX_REASON`` characters, surrogates escaped).

Sending retries what the broker may accept later (broker down, leader moving, timeouts)
until it is acknowledged. An error that no retry cures (message too large for the topic,
topic invalid or forbidden) gets a new producer and more tries with the value truncated
to ``fallback_bytes``; after ``STRIKES`` such refusals the letter is *lost on purpose*:
logged with its source topic, partition and offset and counted, never retried forever, so
that a broker refusing dead letters never stops the counting of good records.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher

from shared.bus import dead_letter_publisher, new_broker
from shared.events import DeadLetter, utc_now
from shared.exactly_once.retry import backoff
from shared.kafka_security import KafkaAccess

log = logging.getLogger(__name__)

MAX_REASON = 2000  # characters; DeadLetter.reason's bound
MAX_BYTES = 900_000  # a letter's JSON, at most, by default: under Kafka's 1 MB with room
FALLBACK_BYTES = 64 * 1024  # the second try of a letter the broker refused for good
MAX_KEY_BYTES = 1024  # a longer record key is not copied onto the letter
STRIKES = 3  # non-retriable failures before a letter is given up


def bound_reason(reason: str) -> str:
    """The reason as a letter carries it: valid UTF-8 and at most MAX_REASON characters."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def dead_letter(group: str, record: Any, reason: str, max_bytes: int = MAX_BYTES) -> DeadLetter:
    """The dead letter of one consumer record, its value truncated if the whole would not fit."""
    value: bytes = record.value or b""
    fields: dict[str, Any] = {
        "occurred_at": utc_now(),
        "consumer_group": group,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "reason": bound_reason(reason),
        "original_size": len(value),
        "original_sha256": hashlib.sha256(value).hexdigest(),
    }
    whole = base64.b64encode(value).decode()
    letter = DeadLetter(payload_base64=whole, **fields)
    size = len(letter.to_bytes())
    if size <= max_bytes:
        return letter
    # Everything but the payload, plus room for "truncated": true; base64 is 4 chars per 3.
    room = max(0, max_bytes - (size - len(whole)) - 32)
    keep = room // 4 * 3
    return DeadLetter(
        payload_base64=base64.b64encode(value[:keep]).decode(), truncated=True, **fields
    )


def _retriable(exc: BaseException) -> bool:
    # A metadata wait that timed out (broker away) is marked non-retriable by aiokafka,
    # but it is what an outage looks like: retry it.
    return isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError))


@dataclass
class _Pending:
    record: Any
    reason: str
    max_bytes: int
    strikes: int = 0  # non-retriable failures so far


@dataclass(frozen=True)
class Outcome:
    """How many letters the broker acknowledged, and how many were given up for good."""

    sent: int = 0
    lost: int = 0


class DeadLetterSender:
    """Sends bounded dead letters to one DLQ topic with a producer of its own: a FastStream
    broker's, with the group's publisher of ``shared/bus.py`` (the one the AsyncAPI document
    declares).

    A batch the broker refused for good leaves the idempotent producer's sequence numbers
    with a gap (aiokafka then answers OutOfOrderSequenceNumber to every later send on that
    partition), so after any non-retriable error the broker, and its producer, is replaced.
    """

    def __init__(
        self,
        bootstrap: str | KafkaAccess,
        client_id: str,
        topic: str,
        group: str,
        *,
        max_bytes: int = MAX_BYTES,
        fallback_bytes: int = FALLBACK_BYTES,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.topic = topic
        self.group = group
        self.max_bytes = max_bytes
        self.fallback_bytes = fallback_bytes
        self._broker: KafkaBroker | None = None
        self._publisher: DefaultPublisher | None = None

    async def start(self) -> None:
        broker = self._broker = new_broker(self.bootstrap, self.client_id)
        publisher = dead_letter_publisher(broker, self.group, self.topic)
        await broker.start()
        self._publisher = publisher

    async def stop(self, timeout: float = 15.0) -> None:
        broker, self._broker, self._publisher = self._broker, None, None
        if broker is not None:
            with contextlib.suppress(TimeoutError, KafkaError):
                await asyncio.wait_for(broker.stop(), timeout)

    async def _replace_producer(self) -> None:
        """A fresh producer (new producer id, no sequence gap); waits while Kafka is away."""
        await self.stop()
        attempt = 0
        while True:
            try:
                await self.start()
            except KafkaError as exc:
                attempt += 1
                log.warning("dead letter producer not started, retrying: %r", exc)
                await self.stop()
                await asyncio.sleep(max(0.2, backoff(attempt, cap=10.0)))
            else:
                return

    async def send(self, poison: Sequence[tuple[Any, str]]) -> Outcome:
        """Send every dead letter; return once each is acknowledged or given up for good.

        The caller stores the offsets past these records only after this returns: a crash
        in between sends a letter twice (same source partition and offset), never loses one.
        A letter is given up after STRIKES non-retriable failures, truncated to
        fallback_bytes after the first.
        """
        pending = [_Pending(record, reason, self.max_bytes) for record, reason in poison]
        sent = lost = attempt = 0
        while pending:
            outcomes = await self._send_round(pending)
            retry: list[_Pending] = []
            wait = broken = False
            for p, error in zip(pending, outcomes, strict=True):
                if error is None:
                    sent += 1
                    _log_letter(p, "dead letter", logging.WARNING)
                elif _retriable(error):
                    retry.append(p)
                    wait = True
                else:
                    broken = True
                    p.strikes += 1
                    if p.strikes < STRIKES:
                        p.max_bytes = min(p.max_bytes, self.fallback_bytes)
                        retry.append(p)
                    else:
                        lost += 1
                        message = f"dead letter refused for good, dropped: {error!r}"
                        _log_letter(p, message, logging.ERROR)
            pending = retry
            if broken:
                await self._replace_producer()
            if wait:
                attempt += 1
                log.warning("dead letters not acknowledged yet, retrying")
                await asyncio.sleep(max(0.2, backoff(attempt, cap=10.0)))
        return Outcome(sent, lost)

    async def _send_round(self, pending: list[_Pending]) -> list[KafkaError | None]:
        """Send each pending letter once; its error, or None once acknowledged."""
        assert self._publisher is not None, "start() the sender first"
        outcomes: list[Any] = []
        for p in pending:
            letter = dead_letter(self.group, p.record, p.reason, p.max_bytes)
            key = p.record.key if p.record.key and len(p.record.key) <= MAX_KEY_BYTES else None
            try:
                outcomes.append(
                    await self._publisher.publish(letter.to_bytes(), key=key, no_confirm=True)
                )
            except KafkaError as exc:  # refused before sending (too large, closed, no metadata)
                outcomes.append(exc)
        futures = [o for o in outcomes if not isinstance(o, BaseException)]
        results = iter(await asyncio.gather(*futures, return_exceptions=True))
        errors: list[KafkaError | None] = []
        for o in outcomes:
            result = o if isinstance(o, BaseException) else next(results)
            if isinstance(result, BaseException) and not isinstance(result, KafkaError):
                raise result
            errors.append(result if isinstance(result, KafkaError) else None)
        return errors


def _log_letter(p: _Pending, message: str, level: int) -> None:
    log.log(
        level,
        message,
        extra={
            "reason": bound_reason(p.reason)[:300],
            "source_topic": p.record.topic,
            "partition": p.record.partition,
            "offset": p.record.offset,
        },
    )
