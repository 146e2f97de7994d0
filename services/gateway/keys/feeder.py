"""The cache feeder: consumes ``keys.events`` into this replica's cache and into Redis.

Every replica reads every partition (no consumer group: each needs every event), so a
revocation reaches each replica's in-process cache as fast as Kafka delivers it. Redis
writes are versioned and idempotent (``shared/key_store.py``), so replicas writing the same
events is harmless, and so is an event arriving after the key service wrote a newer state to
Redis directly (the path that works while Kafka is down). A write that makes a state newer
in Redis is also published to every replica's subscription (``subscriber.py``). When
Redis holds no saved positions (it started empty, or lost its data) the feeder reads the
compacted topic from the beginning and so rebuilds it. Events that could not be written to
Redis while it was down are read again once it answers. An event whose state the key service
did not sign (``trust.py``) is skipped: neither cached nor written to Redis.

It stays on aiokafka, not FastStream (``shared/bus.py``): it assigns every partition itself,
seeks each to the position saved in Redis (or the beginning) before the first fetch, and is
ready only once it reached the end offsets it read at the start. FastStream's subscriber
starts fetching as soon as it starts, with no hook between the assignment and the first
fetch, and gives no end offsets; the declaration in ``shared/bus_spec.py`` documents it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.gateway.breaker import Breaker
from services.gateway.keys.cache import LocalCache
from services.gateway.keys.trust import StateTrust
from services.gateway.telemetry.metrics import Metrics
from shared.events import KeyEvent, KeyState
from shared.kafka import Replication, ensure_topics, topic_partitions
from shared.kafka_security import KafkaAccess, kafka_options
from shared.key_store import KeyStore
from shared.redis_client import REDIS_ERRORS
from shared.topics import KEYS_EVENTS, TOPICS, TopicSpec, topic_name

log = logging.getLogger(__name__)
_EMPTY_CHECK_S = 2.0
# What losing Kafka raises: the feeder's worker restarts it, with a warning and no traceback.
KAFKA_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)


class Feeder:
    """Runs until cancelled or Kafka fails; run by a worker (shared/worker.py) that reconnects."""

    def __init__(
        self,
        *,
        bootstrap: str | KafkaAccess,
        topic_prefix: str,
        local: LocalCache,
        store: KeyStore,
        redis_breaker: Breaker,
        metrics: Metrics,
        trust: StateTrust,
        replication: Replication = Replication(),  # noqa: B008 (frozen, so shared safely)
        topics: tuple[TopicSpec, ...] = TOPICS,
    ) -> None:
        self.trust = trust
        self.bootstrap = bootstrap
        self.replication = replication
        self.topics = topics  # as the deployment wants them (usage.events' partitions)
        self.topic_prefix = topic_prefix
        self.topic = topic_name(KEYS_EVENTS, topic_prefix)
        self.local = local
        self.store = store
        self.redis_breaker = redis_breaker
        self.metrics = metrics
        self.caught_up = asyncio.Event()
        # Per partition, the first offset Redis has not received while it was unreachable.
        self._redis_gap: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        """Read the topic until Kafka fails (the worker that runs it reconnects: main.py)."""
        await ensure_topics(
            self.bootstrap,
            self.topics,
            prefix=self.topic_prefix,
            timeout=10,
            replication=self.replication,
            checked=(KEYS_EVENTS,),  # what the feeder reads; the others are their users' to check
        )
        consumer = AIOKafkaConsumer(
            **kafka_options(self.bootstrap),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            client_id="tollgate-gateway-feeder",
        )
        partitions = await topic_partitions(self.bootstrap, self.topic)
        await asyncio.wait_for(consumer.start(), 15)
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await self._position(consumer, tps)
            ends = await consumer.end_offsets(tps)
            last_empty_check = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                await self._apply(consumer, batch)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(self._at_least(consumer, tp, ends[tp]) for tp in tps))
                ):
                    await self._save_positions(consumer, tps)  # marks Redis as filled
                    self.caught_up.set()
                    log.info("keys feeder caught up", extra={"keys": len(self.local)})
                if self._redis_gap:
                    await self._retry_redis(consumer)
                elif time.monotonic() - last_empty_check > _EMPTY_CHECK_S:
                    last_empty_check = time.monotonic()
                    await self._rebuild_if_emptied(consumer, tps)
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), 5)

    @staticmethod
    async def _at_least(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    async def _position(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Resume where Redis says; from the start when Redis is empty or unreachable."""
        saved: dict[str, int] | None = None
        try:
            saved = await asyncio.wait_for(self.store.offsets(), 2)
        except REDIS_ERRORS as exc:
            log.warning("redis unreachable at feeder start (%s)", type(exc).__name__)
            self.redis_breaker.failed()
            self._redis_gap = dict.fromkeys(tps, 0)
        if saved is None:
            await consumer.seek_to_beginning(*tps)
            return
        for tp in tps:
            offset = saved.get(f"{tp.topic}:{tp.partition}")
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    async def _apply(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[object]]
    ) -> None:
        states: list[KeyState] = []
        first: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                first.setdefault(tp, record.offset)  # type: ignore[attr-defined]
                try:
                    event = KeyEvent.model_validate_json(record.value)  # type: ignore[attr-defined]
                except ValidationError:
                    log.exception("unreadable key event at %s offset %s", tp, record.offset)  # type: ignore[attr-defined]
                    continue
                state = event.state()
                if not self.trust.admit(state, "kafka"):
                    continue  # not the key service's: neither cached nor written to Redis
                self.local.put(state)  # also clears a negative entry: key.created lands here
                states.append(state)
                self.metrics.key_events.inc()
        if not first:
            return
        positions = {f"{tp.topic}:{tp.partition}": await consumer.position(tp) for tp in batch}
        if self._redis_gap:
            for tp, offset in first.items():
                self._redis_gap.setdefault(tp, offset)
            return
        try:
            await asyncio.wait_for(self.store.apply(states, positions), 5)
        except REDIS_ERRORS as exc:
            log.warning("redis write failed (%s); will replay", type(exc).__name__)
            self.redis_breaker.failed()
            self._redis_gap = dict(first)

    async def _retry_redis(self, consumer: AIOKafkaConsumer) -> None:
        """Once Redis answers again, read the events it missed once more."""
        if not self.redis_breaker.available():
            return
        try:
            await asyncio.wait_for(self.store.client.ping(), 1)
        except REDIS_ERRORS:
            self.redis_breaker.failed()
            return
        self.redis_breaker.succeeded()
        for tp, offset in self._redis_gap.items():
            consumer.seek(tp, offset)
        log.info("redis back; replaying %d partitions of key events", len(self._redis_gap))
        self._redis_gap = {}

    async def _rebuild_if_emptied(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> None:
        """A Redis that restarted without its data is refilled from the compacted topic."""
        try:
            exists = await asyncio.wait_for(self.store.client.exists(self.store.offsets_key), 1)
        except REDIS_ERRORS:
            return
        if not exists:
            log.info("redis lost the key states; rebuilding from %s", self.topic)
            await consumer.seek_to_beginning(*tps)
            await self._save_positions(consumer, tps)

    async def _save_positions(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        positions = {f"{tp.topic}:{tp.partition}": await consumer.position(tp) for tp in tps}
        try:
            await asyncio.wait_for(self.store.apply([], positions), 2)
        except REDIS_ERRORS as exc:
            log.warning("could not save feeder positions (%s)", type(exc).__name__)
