"""The usage.events consumer that keeps each key's ``last_used_at`` current, in batches.

Moving ``last_used_at`` forward is idempotent (the greatest time wins), so redelivery is
harmless: offsets are committed after the batch's update committed, and a new group starts
from the earliest retained record.

It never stalls on a record. A record that is not a valid usage event, and a record whose
update the database refuses for its values (a NUL or an over-long key id: SQLSTATE classes
22, 23, 54, found by splitting the batch in savepoints, shared/exactly_once/split.py), go to
``usage.events.dlq`` with the reason, in the same ``DeadLetter`` shape as metering's and
billing's (consumer group ``keys-last-used``); the rest of the batch is applied, the dead
letters are acknowledged, and only then are the offsets committed (a crash sends a letter
twice, never loses one). Transient database errors, and errors no record causes (a missing
table), restart the consumer from the committed offsets: retried, nothing skipped.

The consumer is FastStream's (``shared/bus.py``: batches, ``AckPolicy.MANUAL``, headers never
parsed): the handler acknowledges a batch, which commits, only after its update and its dead
letters; a batch that fails is never acknowledged, and ends the session, so the worker
(``shared/worker.py``) starts a new consumer from the committed offsets after its back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faststream import NoCast
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from pydantic import ValidationError

from services.keys import repository as repo
from services.keys.settings import KeysSettings
from shared.bus import Records, last_used_subscriber, new_broker
from shared.events import UsageRecorded
from shared.exactly_once.dlq import DeadLetterSender
from shared.exactly_once.retry import READ_ERRORS
from shared.exactly_once.split import CONTROL_SIZE, confirm, split_apply
from shared.exactly_once.types import Poison
from shared.kafka import ensure_topics
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ
from shared.worker import Backoff, Worker

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Use:
    """One usage record's key and time, and the record itself (for its dead letter)."""

    key_id: str
    at: datetime
    record: Any


def parse_uses(records: list[Any]) -> tuple[list[Use], list[tuple[Any, str]]]:
    """Each record's use, or the record with the reason it is not a usage event."""
    uses: list[Use] = []
    poison: list[tuple[Any, str]] = []
    for record in records:
        if record.value is None:
            poison.append((record, "empty record (tombstone)"))
            continue
        try:
            event = UsageRecorded.model_validate_json(record.value)
        except ValidationError as exc:
            poison.append((record, Poison.invalid(exc).reason))
            continue
        uses.append(Use(event.key_id, event.occurred_at, record))
    return uses, poison


def latest_use(uses: list[Use]) -> dict[str, datetime]:
    """The latest time per key id among the uses."""
    latest: dict[str, datetime] = {}
    for use in uses:
        if use.key_id not in latest or latest[use.key_id] < use.at:
            latest[use.key_id] = use.at
    return latest


class LastUsedConsumer:
    """Consumes usage.events in its own group and moves ``last_used_at`` forward."""

    def __init__(self, settings: KeysSettings, pool: asyncpg.Pool, client_id: str) -> None:
        self.settings = settings
        self.pool = pool
        self.client_id = client_id
        self.updated = 0
        self.dead_letters = 0
        self.dead_letters_lost = 0
        self.refused = 0
        self._control: list[Use] = []  # uses the database accepted (shared/exactly_once/split.py)
        self._positions: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        # last_used_at must keep flowing whatever broke: started over with a new consumer.
        self.worker = Worker(
            "keys-last-used",
            self._session,
            expected=(KafkaError, *READ_ERRORS),
            backoff=Backoff(0.2, 5.0),
            cancel_wait_s=STOP_TIMEOUT_S,
        )

    @property
    def lag(self) -> int:
        """Records after the committed offsets, per the last fetch's high watermarks."""
        return sum(max(0, end - self._positions.get(tp, end)) for tp, end in self._ends.items())

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the consumer."""
        return {
            "last_used_updates": self.updated,
            "last_used_lag": self.lag,
            "last_used_dead_letters": self.dead_letters,
            "last_used_dead_letters_lost": self.dead_letters_lost,
        }

    def start(self) -> None:
        """Consume in the background (and keep retrying while Kafka is away)."""
        self.worker.start()

    async def stop(self) -> None:
        """Stop consuming; uncommitted records come again to the next consumer."""
        # Ask first (a consumer cancelled half-way through its start leaks sockets), then
        # cancel; either way bounded, since aiokafka may sit in a group join meanwhile.
        await self.worker.stop(grace_s=STOP_TIMEOUT_S)

    async def _session(self) -> None:
        """One broker with the subscriber (and a dead-letter producer), until stopped or
        a batch fails: then the worker starts over from the committed offsets, after a pause."""
        broker = new_broker(self.settings.kafka, self.client_id)
        subscriber = last_used_subscriber(
            broker,
            self.settings.consumer_group,
            self.settings.last_used_batch,
            topic=self.settings.usage_topic,
        )
        dlq = DeadLetterSender(
            self.settings.kafka,
            f"{self.client_id}-dlq",
            self.settings.dlq_topic,
            self.settings.consumer_group,
        )
        failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

        async def on_batch(batch: NoCast[Records], message: KafkaMessage) -> None:
            try:
                await self._consume(batch, subscriber, dlq)
                await message.ack()
                self._note_positions(batch)
            except Exception as exc:
                # Never acknowledged: the session ends and the next one re-reads the batch.
                if not failed.done():
                    failed.set_result(exc)
                raise

        subscriber(on_batch)
        try:
            # Subscribing to a topic not created yet only logs errors until it exists.
            await ensure_topics(
                self.settings.kafka,
                self.settings.topics,
                prefix=self.settings.topic_prefix,
                timeout=10,
                replication=self.settings.replication,
                checked=(USAGE_EVENTS, USAGE_EVENTS_DLQ),
            )
            self._positions.clear()
            self._ends.clear()
            await dlq.start()
            await broker.start()
            self.worker.succeeded()
            stopping = asyncio.ensure_future(self.worker.stopping.wait())
            try:
                await asyncio.wait((stopping, failed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if failed.done():
                raise failed.result()
        finally:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(broker.stop(), 10)
            await dlq.stop(10)

    async def _consume(
        self, records: Records, subscriber: BatchSubscriber, dlq: DeadLetterSender
    ) -> None:
        """Apply one batch and dead-letter what it refuses (the partitions' ends for the lag)."""
        consumer = subscriber.consumer
        if consumer is not None:
            for tp in consumer.assignment():
                end = consumer.highwater(tp)
                if end is not None:
                    self._ends[tp] = end
        uses, poison = parse_uses(list(records))
        poison += await self._apply(uses)
        if poison:
            outcome = await dlq.send(poison)
            self.dead_letters += outcome.sent
            self.dead_letters_lost += outcome.lost

    def _note_positions(self, records: Records) -> None:
        """The committed position of each partition the batch came from (for the lag)."""
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._positions[tp] = max(self._positions.get(tp, 0), record.offset + 1)

    async def _apply(self, uses: list[Use]) -> list[tuple[Any, str]]:
        """Apply the uses in one transaction, split around those the database refuses."""
        if not uses:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            suspects = await split_apply(conn, uses, self._touch)
            # Before any dead letter: is the database itself at fault?
            # (shared/exactly_once/split.py)
            result = await confirm(conn, suspects, self._control, self._touch)
        self.updated += result.done
        self.refused += len(result.refused)
        return [(r.item.record, r.reason) for r in result.refused]

    async def _touch(self, conn: Conn, uses: list[Use]) -> int:
        latest = latest_use(uses)
        updated = await repo.touch_last_used(conn, list(latest), list(latest.values()))
        self._control = uses[:CONTROL_SIZE]
        return updated
