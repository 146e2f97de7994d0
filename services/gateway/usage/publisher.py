"""Usage events onto Kafka with an outcome per record: delivered, refused for good, or unsent.

Kafka answers per partition batch, not per record: when the broker refuses a batch as too
large, invalid or corrupt, every record in it gets that error, the culprit and its neighbours
alike (a batch of good records can even be too large together). Such records are suspects:
each is sent again alone, and only one that is refused alone is refused for good. aiokafka
raises ``MessageSizeTooLargeError`` from ``send`` for a record above ``max_request_size``;
that one never left the client and is refused at once. Any other failure (no broker,
timeouts, not leader, ...) leaves the records unsent, for the spool.

A batch the broker refused leaves a gap in the idempotent producer's sequence for its
partition, so the producer is replaced after each refusal (the broker then sees a new
producer id); the records that failed only because of that gap are sent again once.

It stays on aiokafka, not FastStream (``shared/bus.py``), because it is on every request's
path: ``bench/bus_publish.py`` (same broker, same producer settings, 20,000 records, three
rounds) measured FastStream's ``publish`` at 31-36 us of CPU per record against aiokafka's
16-19 us, 1.6 to 2x (its command object, middleware chain, codec and two headers per
record): some 7% of the whole gateway's CPU per request. The per-record outcomes above
need aiokafka's futures and error classes either way. ``shared/bus_spec.py`` declares this
publisher for the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    RecordListTooLargeError,
    UnknownError,
)

from services.gateway.breaker import Breaker
from services.gateway.usage.produce_batches import MIN_PER_PARTITION, Message, Partitioner, build
from services.gateway.usage.quarantine import Refused
from shared.kafka import idempotent_producer
from shared.kafka_security import KafkaAccess

log = logging.getLogger(__name__)
# Records handed to the producer together, and the call that hands them over.
Unit = tuple[list[Message], Callable[[], Awaitable["asyncio.Future[object]"]]]

# Broker errors about the records of a batch, none of which a retry cures. UnknownError is
# how aiokafka 0.14 reports INVALID_RECORD (87), a code it has no class for.
_REFUSED_BATCH = (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
    UnknownError,
)
_TRANSIENT = (KafkaError, OSError, TimeoutError)
_SKIPPED = "Kafka unavailable"  # the breaker is open: nothing was tried
MAX_BATCH_BYTES = 256 * 1024  # a produce batch, at most: under the broker's 1 MB message.max.bytes


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Outcome:
    """What became of each record of one publish call."""

    delivered: int = 0
    refused: list[Refused] = field(default_factory=list)
    unsent: list[Message] = field(default_factory=list)
    suspects: list[tuple[Message, str]] = field(default_factory=list)
    trouble: str = ""  # the first transient failure, for the log
    gap: bool = False  # some failed on a sequence gap: a fresh producer will take them
    producer: AIOKafkaProducer | None = None  # the one this attempt used


class Publisher:
    """One idempotent producer for usage events, replaced after an outage or a refusal."""

    def __init__(
        self,
        bootstrap: str | KafkaAccess,
        topic: str,
        delivery_timeout_s: float,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
        batched_from: int = MIN_PER_PARTITION,
    ) -> None:
        """``batched_from``: records per partition (on average) from which a call goes out as
        batches built per partition (``produce_batches.py``)."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.delivery_timeout_s = delivery_timeout_s
        self._new_producer = new_producer or self._idempotent
        self.kafka = Breaker(retry_s=1.0)
        self._producer: AIOKafkaProducer | None = None
        self._connecting = asyncio.Lock()
        self._partitioner = Partitioner()
        self.batched_from = batched_from

    async def publish(self, messages: list[Message]) -> Outcome:
        """Send messages keyed by key id; an outcome for every one of them."""
        if not messages:
            return Outcome()
        first = await self._attempt(messages)
        outcome = Outcome(first.delivered, first.refused, first.unsent, [], first.trouble)
        suspects = first.suspects
        if suspects or first.gap:
            # A refused batch (this call's, or the other task's on the shared producer) left
            # a gap in the producer's sequence, or the other task replaced the producer.
            await self._drop_producer(first.producer)
            if outcome.unsent:  # perhaps only because of that gap: once more
                again = await self._attempt(outcome.unsent)
                outcome.delivered += again.delivered
                outcome.refused += again.refused
                outcome.unsent, outcome.trouble = again.unsent, again.trouble
                suspects += again.suspects
                if again.suspects:
                    await self._drop_producer(again.producer)
            for at, (message, reason) in enumerate(suspects):
                if outcome.unsent:  # Kafka is in trouble: the rest waits in the spool
                    outcome.unsent += [m for m, _ in suspects[at:]]
                    break
                alone = await self._attempt([message])
                outcome.delivered += alone.delivered
                outcome.refused += alone.refused
                outcome.unsent += alone.unsent
                outcome.trouble = outcome.trouble or alone.trouble
                if alone.suspects:
                    outcome.refused.append(Refused(message[1], alone.suspects[0][1] or reason))
                    await self._drop_producer(alone.producer)
        if outcome.unsent and outcome.trouble != _SKIPPED:
            log.warning(
                "%d usage events not acknowledged (%s)", len(outcome.unsent), outcome.trouble
            )
            self.kafka.failed()
            # A fresh producer after an outage: an idempotent one that timed out may hold
            # sequence numbers the broker no longer accepts.
            await self._drop_producer()
        return outcome

    async def _attempt(self, messages: list[Message]) -> Outcome:
        """One try: send all, wait for every acknowledgement within the delivery timeout."""
        outcome = Outcome()
        producer = outcome.producer = await self._connected()
        if producer is None:
            outcome.unsent, outcome.trouble = list(messages), _SKIPPED
            return outcome
        units = await self._units(producer, messages)
        sent: list[tuple[list[Message], asyncio.Future[object]]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delivery_timeout_s
        for at, (group, submit) in enumerate(units):
            try:
                async with asyncio.timeout_at(deadline):
                    future = await submit()
            except MessageSizeTooLargeError as exc:  # client-side: never left this process
                outcome.refused += [Refused(message[1], _reason(exc)) for message in group]
                continue
            except _TRANSIENT as exc:
                outcome.unsent += [message for group, _ in units[at:] for message in group]
                outcome.trouble = _reason(exc)
                # The other task replaced the shared producer meanwhile: a fresh one will do.
                outcome.gap = isinstance(exc, ProducerClosed)
                break
            sent.append((group, future))
        if sent:
            futures = [future for _, future in sent]
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        for group, future in sent:
            if not future.done() or future.cancelled():
                outcome.unsent += group
                outcome.trouble = outcome.trouble or "not acknowledged in time"
                continue
            error = future.exception()
            if error is None:
                outcome.delivered += len(group)
            elif isinstance(error, _REFUSED_BATCH):
                outcome.suspects += [(message, _reason(error)) for message in group]
            else:
                outcome.unsent += group
                outcome.trouble = outcome.trouble or _reason(error)
                outcome.gap = outcome.gap or isinstance(
                    error, (OutOfOrderSequenceNumber, ProducerClosed)
                )
        return outcome

    async def _units(self, producer: AIOKafkaProducer, messages: list[Message]) -> list[Unit]:
        """What to hand the producer: whole batches per partition when the call is large
        enough (``produce_batches.py``), else record by record."""
        built = None
        if len(messages) >= self.batched_from:
            try:
                partitions = sorted(await producer.partitions_for(self.topic))
            except _TRANSIENT:
                partitions = []  # no metadata: record by record tells what is wrong
            built = build(producer, messages, partitions, self._partitioner, self.batched_from)
        if built is None:
            return [
                ([m], partial(producer.send, self.topic, value=m[1], key=m[0])) for m in messages
            ]
        batches, alone = built
        units: list[Unit] = [
            (b.messages, partial(producer.send_batch, b.builder, self.topic, partition=b.partition))
            for b in batches
        ]
        units += [([m], partial(producer.send, self.topic, value=m[1], key=m[0])) for m in alone]
        return units

    async def _connected(self) -> AIOKafkaProducer | None:
        if self._producer is None:
            if not self.kafka.available():
                return None
            async with self._connecting:
                if self._producer is None:  # another task may have connected meanwhile
                    self._producer = await self._started()
        return self._producer

    async def _started(self) -> AIOKafkaProducer | None:
        """A new producer, started; None (and the breaker told) when Kafka does not answer."""
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), self.delivery_timeout_s)
        except _TRANSIENT as exc:
            log.warning("Kafka unreachable for usage events (%s)", type(exc).__name__)
            self.kafka.failed()
            with contextlib.suppress(*_TRANSIENT):
                await asyncio.wait_for(producer.stop(), 2)
            return None
        self.kafka.succeeded()
        return producer

    def _idempotent(self) -> AIOKafkaProducer:
        return idempotent_producer(
            self.bootstrap,
            "tollgate-gateway",
            request_timeout_ms=int(self.delivery_timeout_s * 1000),
            # aiokafka sends one batch per partition per request and one request at a time:
            # at 16 KiB (its default) a round trip carries about 230 usage events over six
            # partitions, and the publisher falls behind a gateway running flat out.
            max_batch_size=MAX_BATCH_BYTES,
        )

    async def stop(self) -> None:
        await self._drop_producer()

    async def _drop_producer(self, used: AIOKafkaProducer | None = None) -> None:
        """Stop the producer (only if it is still the one used: the other task may have
        replaced it already)."""
        if used is not None and used is not self._producer:
            return
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(*_TRANSIENT):
                await asyncio.wait_for(producer.stop(), 2)
