"""Usage events to ``usage.events``, off the response path, with the spool as the fallback.

A request only puts its event on an in-memory queue. One task sends queued events to Kafka
in batches and waits for the acknowledgements; a batch not acknowledged in time goes to the
spool, and while Kafka is known to be down new batches go there directly. Another task
replays the spool, oldest segment first, once Kafka answers again. A slow or absent Kafka
never slows a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.gateway.cache import Breaker
from services.gateway.metrics import Metrics
from services.gateway.spool import Spool
from shared.events import UsageRecorded
from shared.kafka import idempotent_producer
from shared.topics import USAGE_EVENTS, topic_name

log = logging.getLogger(__name__)
_BATCH = 500
_REPLAY_EVERY_S = 0.5
_Message = tuple[bytes, bytes]  # (key id, event JSON)


def _key_of(line: bytes) -> bytes:
    """The message key (key id) of a spooled event."""
    return str(json.loads(line)["key_id"]).encode()


class UsageEmitter:
    """Queue, publisher task and spool replayer of one gateway instance."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic_prefix: str,
        spool: Spool,
        metrics: Metrics,
        queue_size: int,
        delivery_timeout_s: float,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic_name(USAGE_EVENTS, topic_prefix)
        self.spool = spool
        self.metrics = metrics
        self.delivery_timeout_s = delivery_timeout_s
        self.queue: asyncio.Queue[_Message] = asyncio.Queue(queue_size)
        self.kafka = Breaker(retry_s=1.0)
        self._producer: AIOKafkaProducer | None = None
        self._connecting = asyncio.Lock()
        self._overflow: list[_Message] = []
        metrics.spool_depth.set_function(lambda: spool.depth)

    def record(self, event: UsageRecorded) -> None:
        """Hand an event over; never blocks and never fails the request."""
        message = (event.key_id.encode(), event.to_bytes())
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self._overflow.append(message)  # spilled to disk by the publisher task

    async def run_publisher(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < _BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if self._overflow:
                batch, self._overflow = batch + self._overflow, []
            await self._deliver(batch)

    async def run_replayer(self) -> None:
        while True:
            await asyncio.sleep(_REPLAY_EVERY_S)
            for segment in self.spool.segments():
                lines = await asyncio.to_thread(self.spool.read, segment)
                messages = [(_key_of(line), line) for line in lines]
                if not await self._send(messages):
                    break
                self.spool.remove(segment, len(messages))
                self.metrics.usage_events.labels("replayed").inc(len(messages))
                log.info("replayed %d spooled usage events", len(messages))

    async def close(self) -> None:
        """Flush what is queued to Kafka, or else to the spool; stop the producer."""
        pending: list[_Message] = self._overflow
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        if pending:
            await self._deliver(pending)
        await self._drop_producer()

    async def _deliver(self, batch: list[_Message]) -> None:
        if await self._send(batch):
            self.metrics.usage_events.labels("published").inc(len(batch))
            return
        await asyncio.to_thread(self.spool.append, [value for _, value in batch])
        self.metrics.usage_events.labels("spooled").inc(len(batch))

    async def _send(self, messages: list[_Message]) -> bool:
        """Send messages keyed by key id and wait for every acknowledgement."""
        producer = await self._connected()
        if producer is None:
            return False
        try:
            async with asyncio.timeout(self.delivery_timeout_s):
                futures = [
                    await producer.send(self.topic, value=value, key=key) for key, value in messages
                ]
                await asyncio.gather(*futures)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("usage events not acknowledged (%s); spooling", type(exc).__name__)
            self.kafka.failed()
            # A fresh producer after an outage: an idempotent one that timed out may hold
            # sequence numbers the broker no longer accepts.
            await self._drop_producer()
            return False
        return True

    async def _connected(self) -> AIOKafkaProducer | None:
        if self._producer is not None:
            return self._producer
        if not self.kafka.available():
            return None
        async with self._connecting:
            if (current := self._current()) is not None:
                return current  # another task connected while this one waited
            producer = idempotent_producer(
                self.bootstrap,
                "tollgate-gateway",
                request_timeout_ms=int(self.delivery_timeout_s * 1000),
            )
            try:
                await asyncio.wait_for(producer.start(), self.delivery_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("Kafka unreachable for usage events (%s)", type(exc).__name__)
                self.kafka.failed()
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    await asyncio.wait_for(producer.stop(), 2)
                return None
            self.kafka.succeeded()
            self._producer = producer
            return producer

    def _current(self) -> AIOKafkaProducer | None:
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), 2)
