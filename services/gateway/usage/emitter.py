"""Usage events to ``usage.events``, off the response path, with the spool as the fallback.

A request only puts its event on an in-memory queue. One task sends queued events to Kafka
in batches and waits for each record's acknowledgement (``publisher.Publisher``): a record
Kafka refuses for good goes to the quarantine, the rest of its batch is delivered; what was
not acknowledged in time goes to the spool, and while Kafka is known to be down new batches go
there directly. Another task replays the spool, oldest segment first, once Kafka answers again;
a line it cannot send ever (not an event, refused by Kafka) is quarantined, never a wedge.

Usage is never dropped to stay within a bound. When the spool is full and Kafka does not take
the events, the publisher holds its batch in memory and the gateway stops admitting metered
requests (``accepting`` is false: 503) until Kafka or the spool has room again; the events of
requests already in flight are still kept. A slow or absent Kafka never slows a response.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from services.gateway.telemetry.metrics import Metrics
from services.gateway.usage.produce_batches import Message
from services.gateway.usage.publisher import Publisher
from services.gateway.usage.quarantine import Refused
from services.gateway.usage.spool import Spool, SpoolFull
from shared.events import UsageRecorded
from shared.kafka_security import KafkaAccess
from shared.topics import USAGE_EVENTS, topic_name

log = logging.getLogger(__name__)
_BATCH = 500
_REPLAY_EVERY_S = 0.5
_HOLD_RETRY_S = 0.5
_KEY_ID_MAX = 200


def parse_spooled(line: bytes) -> Message | Refused:
    """A spooled line as a message keyed by key id, or why it is no usage event at all."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return Refused(line, f"not JSON (truncated or corrupt): {exc}")
    if not isinstance(event, dict):
        return Refused(line, "not a JSON object")
    key_id = event.get("key_id")
    if not isinstance(key_id, str) or not key_id or len(key_id) > _KEY_ID_MAX:
        return Refused(line, "no usable key_id")
    return key_id.encode(), line


class UsageEmitter:
    """Queue, publisher task and spool replayer of one gateway instance."""

    def __init__(
        self,
        *,
        bootstrap: str | KafkaAccess,
        topic_prefix: str,
        spool: Spool,
        metrics: Metrics,
        queue_size: int,
        delivery_timeout_s: float,
        linger_s: float = 0.1,
    ) -> None:
        self.spool = spool
        # After the first event of a batch, wait this long for more: one produce then carries
        # many events at any concurrency, instead of one round trip to Kafka per request at low
        # load, and the broker handles a few large produce requests instead of many small ones.
        self.linger_s = linger_s
        self.metrics = metrics
        self.queue_size = queue_size
        self.publisher = Publisher(
            bootstrap, topic_name(USAGE_EVENTS, topic_prefix), delivery_timeout_s
        )
        self.kafka = self.publisher.kafka
        self.queue: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        # Events of requests admitted while the queue was full: bounded by the requests in
        # flight when it filled, since no new metered request is admitted then.
        self._overflow: list[Message] = []
        self._batch: list[Message] = []  # taken from the queue, not yet placed anywhere
        self._held = False  # the last batch found neither Kafka nor room in the spool
        metrics.watch_usage(self)

    @property
    def pending(self) -> int:
        """Events in memory: queued, overflowed, or in the batch being placed."""
        return self.queue.qsize() + len(self._overflow) + len(self._batch)

    @property
    def accepting(self) -> bool:
        """False while usage could not be kept durably: then metered requests get 503."""
        return not self._held and self.pending < self.queue_size

    def record(self, event: UsageRecorded) -> None:
        """Hand an event over; never blocks, never fails the request, never drops it."""
        self.put((event.key_id.encode(), event.to_bytes()))

    def put(self, message: Message) -> None:
        """Hand an event over as it goes on the topic (``event.usage_message``)."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            if not self._overflow:
                log.warning("usage queue full (%d events in memory)", self.pending)
            self._overflow.append(message)

    async def run_publisher(self) -> None:
        while True:
            if self._held:
                await asyncio.sleep(_HOLD_RETRY_S)
            elif not self._batch:  # else a batch a failure interrupted: placed first
                self._batch = [await self.queue.get()]
                if self.queue.qsize() < _BATCH - 1:
                    await asyncio.sleep(self.linger_s)  # the event waits in _batch: still pending
                while len(self._batch) < _BATCH and not self.queue.empty():
                    self._batch.append(self.queue.get_nowait())
                if self._overflow:
                    self._batch, self._overflow = self._batch + self._overflow, []
            self._batch = await self._deliver(self._batch)
            if bool(self._batch) != self._held:
                self._held = bool(self._batch)
                if self._held:
                    log.error(
                        "spool full and Kafka away: %d usage events held in memory,"
                        " metered requests get 503",
                        len(self._batch),
                    )
                else:
                    log.info("usage events placed again; admitting metered requests")

    async def run_replayer(self) -> None:
        while True:
            await asyncio.sleep(_REPLAY_EVERY_S)
            await asyncio.to_thread(self.spool.quarantine.rescan)
            if not self.kafka.available():
                continue  # no need to read a segment Kafka cannot take now
            for segment in await asyncio.to_thread(self.spool.segments):
                if not await self._replay(segment):
                    break  # Kafka does not take events now: the next round tries again

    async def close(self) -> None:
        """Flush what is in memory to Kafka, or else to the spool (past its bound if need be:
        at shutdown that beats losing events); stop the producer."""
        pending = self._batch + self._overflow
        self._batch, self._overflow = [], []
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        if pending:
            left = await self._deliver(pending)
            if left:
                await asyncio.to_thread(self.spool.append, [v for _, v in left], force=True)
                log.error("spool past its bound at shutdown: %d events written", len(left))
                self.metrics.usage_events.labels("spooled").inc(len(left))
        await self.publisher.stop()

    async def _deliver(self, batch: list[Message]) -> list[Message]:
        """Publish a batch; quarantine what Kafka refuses for good and spool what it did not
        take. Returns the events that could be placed nowhere (spool full)."""
        outcome = await self.publisher.publish(batch)
        self.metrics.usage_events.labels("published").inc(outcome.delivered)
        await self._quarantine(outcome.refused, "publish")
        if not outcome.unsent:
            return []
        values = [value for _, value in outcome.unsent]
        try:
            written = await asyncio.to_thread(self.spool.append_what_fits, values)
        except (SpoolFull, OSError) as exc:  # the disk itself is full or failing
            log.error("usage events not spooled: %s", exc)  # noqa: TRY400 (no traceback needed)
            written = 0
        self.metrics.usage_events.labels("spooled").inc(written)
        return outcome.unsent[written:]

    async def _replay(self, segment: Path) -> bool:
        """Replay one segment; False when Kafka did not take all of it (the rest stays)."""
        try:
            lines = await asyncio.to_thread(self.spool.read, segment)
        except FileNotFoundError:
            return True
        parsed = [parse_spooled(line) for line in lines]
        corrupt = [p for p in parsed if isinstance(p, Refused)]
        messages = [p for p in parsed if not isinstance(p, Refused)]
        outcome = await self.publisher.publish(messages)
        await self._quarantine(corrupt + outcome.refused, "replay")
        self.metrics.usage_events.labels("replayed").inc(outcome.delivered)
        if outcome.unsent:
            if len(outcome.unsent) < len(lines):
                await asyncio.to_thread(
                    self.spool.replace, segment, [value for _, value in outcome.unsent]
                )
            return False
        await asyncio.to_thread(self.spool.remove, segment)
        log.info("replayed %d spooled usage events", outcome.delivered)
        return True

    async def _quarantine(self, refused: list[Refused], source: str) -> None:
        if refused:
            await asyncio.to_thread(self.spool.quarantine.add, refused, source)
            self.metrics.usage_events.labels("quarantined").inc(len(refused))
