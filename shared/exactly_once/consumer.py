"""Exactly-once ledgers from at-least-once Kafka delivery: the plumbing metering and billing share.

Each batch of records is parsed by the service (good events, or ``Poison`` with a reason);
poison goes to the DLQ with its original bytes *before* anything is stored, so a crash
can duplicate a dead letter but never lose one. Then, in one PostgreSQL transaction:
the batch's event ids go into ``processed_events`` (a replay or a producer retry is
dropped there), the service applies the fresh events to its ledgers, and the next offset
of every partition goes into ``consumer_offsets``. Kafka's own committed offsets are
written only after that commit, as a courtesy for lag monitoring: on every partition
assignment the consumer seeks to the offsets stored in PostgreSQL, which are the truth.

A consumer never stalls on a record: an event the database refuses for its values is
found by splitting the batch and dead-lettered with the reason (SQLSTATE and message), and
the rest of the batch commits exactly once (batch.py). Only SQLSTATE classes 22, 23 and 54
can be a record's fault (retry.py), and only once records applied before are still accepted
(split.py); anything else is the database's fault.

The database's faults stall the consumer: it retries with backoff, logs each failure, and
after ``stall_after_s`` with records waiting /readyz answers 503 (shared/exactly_once/progress.py).

It stays on aiokafka rather than FastStream's subscriber (``shared/bus.py``), for what that
subscriber's fetch-then-handle loop (0.7.8) leaves no room for: the next batch is fetched
and parsed while the one before it commits; a newly assigned partition is paused in the
rebalance listener and sought to its PostgreSQL offset in this loop, between fetches (a
database outage must not hold the group's rebalance, and FastStream calls no handler while
every partition is paused, so a handler could not do it); a batch fetched before a
rebalance is dropped by its epoch; and Kafka's offsets are committed as an offset map
computed here, in the background. ``shared/bus_spec.py`` declares it for the document.

The SQL, and the migrations of the tables it needs, are in store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from shared.events import utc_now
from shared.exactly_once import store as ledger_store
from shared.exactly_once.batch import BatchWriter, Prepared, prepare
from shared.exactly_once.dlq import DeadLetterSender
from shared.exactly_once.partitions import DayPartitions, day_start, days_between, uuid7_time
from shared.exactly_once.progress import Progress, watch_ends
from shared.exactly_once.types import (
    Apply,
    BeforeBatch,
    ConsumerConfig,
    ConsumerStats,
    Identified,
    Poison,
    T,
    Upkeep,
)
from shared.kafka_security import kafka_options
from shared.worker import Backoff, Worker, Workers

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

__all__ = ["ConsumerConfig", "ConsumerStats", "Identified", "LedgerConsumer", "Poison"]

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: LedgerConsumer[Any]) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight finish (and commit) before the partitions move on.
        async with self.owner.batch_lock:
            self.owner.epoch += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing is fetched from a new partition until its offset came from PostgreSQL.
        self.owner.epoch += 1
        self.owner.stats.assigned = set(assigned)
        self.owner.progress.reassigned(assigned)
        if assigned:
            self.owner.consumer.pause(*assigned)
            self.owner.pending_seek |= set(assigned)


class LedgerConsumer(Generic[T]):
    """One consumer-group member feeding one service's ledgers, exactly once."""

    def __init__(
        self,
        config: ConsumerConfig,
        pool: asyncpg.Pool,
        parse: Callable[[bytes | None], T],
        apply: Apply[T],
        *,
        before_batch: BeforeBatch[T] | None = None,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.parse = parse
        self.apply = apply
        self.upkeep = upkeep  # the service's own tables' days, at start and every cleanup
        self.stats = ConsumerStats()
        self.progress = Progress(config.stall_after_s)
        # Event ids by the day of their UUIDv7 time: dropped whole past the dedupe window.
        self.seen_days = DayPartitions("processed_events", "uuid7")
        self.writer = BatchWriter(config, pool, apply, self.stats, self._before(before_batch))
        self.batch_lock = asyncio.Lock()
        self.epoch = 0
        self.pending_seek: set[TopicPartition] = set()
        # Kafka clients are made in start(): an unstarted client must not linger.
        self.consumer: AIOKafkaConsumer
        self.dlq = DeadLetterSender(
            config.bootstrap,
            f"{config.client_id}-dlq",
            config.dlq_topic,
            config.group_id,
            max_bytes=config.max_dead_letter_bytes,
        )
        name = config.group_id
        self._consume = Worker(
            f"{name}-consume", self._run, backoff=Backoff(0.5, 30.0), on_error=self._reread
        )
        # Monitoring and housekeeping: each catches its own errors; restarted if one slips.
        self.workers = Workers(
            self._consume,
            Worker(f"{name}-cleanup", self._cleanup_loop),
            Worker(f"{name}-lag", self._watch_ends),
        )
        self._kafka_offsets: dict[TopicPartition, int] = {}
        self._kafka_commit: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the group and start consuming in the background."""
        self.consumer = AIOKafkaConsumer(
            **kafka_options(self.config.bootstrap),
            group_id=self.config.group_id,
            client_id=self.config.client_id,
            # Offsets live in PostgreSQL; Kafka's are written by hand after each commit.
            enable_auto_commit=False,
            # A new group must start from the oldest event, never skip to the newest.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.config.session_timeout_ms // 4),
            max_poll_interval_ms=300_000,
            # A member stuck in a rebalance (its batch retrying a dead database) is dropped
            # after this, rather than holding the whole group for max_poll_interval_ms.
            rebalance_timeout_ms=30_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
        )
        await self.dlq.start()
        await self.writer.retrying(self._upkeep)  # the days a batch needs, before the first
        self.consumer.subscribe([self.config.topic], listener=_Listener(self))
        await self.consumer.start()
        self.workers.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Leave the group cleanly: the batch in flight finishes first, if it can in time."""
        # A batch stuck on an unreachable database is cancelled: its transaction rolls
        # back, and its records are read again by whoever owns the partitions next.
        try:
            await asyncio.wait_for(self.batch_lock.acquire(), timeout)
            locked = True
        except TimeoutError:
            locked = False
        try:
            await self.workers.stop()  # cancelled at once, bounded (shared/worker.py)
        finally:
            if locked:
                self.batch_lock.release()
        if self._kafka_commit is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._kafka_commit
        # aiokafka can sit in a group join while it stops: bounded, so shutdown goes on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.consumer.stop(), 15)
        await self.dlq.stop()

    @property
    def running(self) -> bool:
        return self.workers.running

    def health(self) -> dict[str, Any]:
        """Counters, progress (lag, last commit age, stalled), the workers' state; JSON-ready."""
        return {**self.stats.as_dict(), **self.progress.as_dict(), "workers": self.workers.health()}

    async def _run(self) -> None:
        """Fetch and parse batch N+1 while batch N is stored; store batches one at a time.

        A failure ends it (its worker restarts it after a pause, ``_reread`` first)."""
        in_flight: asyncio.Task[None] | None = None
        try:
            while True:
                if self.pending_seek:
                    if in_flight is not None:
                        await in_flight
                        in_flight = None
                    await self._seek_pending()
                epoch = self.epoch
                batch = await self.consumer.getmany(
                    timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_batch
                )
                self.progress.saw_ends(
                    (tp, self.consumer.highwater(tp)) for tp in self.consumer.assignment()
                )
                prepared = self._prepare(batch, epoch) if batch else None
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if prepared is not None:
                    in_flight = asyncio.create_task(self._store(prepared))
                self._consume.succeeded()
        except asyncio.CancelledError:
            if in_flight is not None:
                in_flight.cancel()
            raise
        except Exception:
            if in_flight is not None and not in_flight.done():
                with contextlib.suppress(Exception):
                    await in_flight
            raise

    def _reread(self, exc: Exception) -> None:
        """Unexpected (a bug, a broken client): never skip past the failed records. Every
        partition goes back to its offset in PostgreSQL, after the worker's pause."""
        self.stats.last_error = repr(exc)
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)
            self.pending_seek |= set(assigned)

    async def _seek_pending(self) -> None:
        """Seek each newly assigned partition to its offset in PostgreSQL, then resume it."""
        async with self.batch_lock:
            epoch = self.epoch
            wanted = set(self.pending_seek) & self.consumer.assignment()
            stored = await self.writer.retrying(
                lambda conn: ledger_store.read_offsets(conn, self.config, wanted)
            )
            if epoch != self.epoch:
                return  # assigned anew meanwhile: start over with the new assignment
            for tp in wanted:
                if tp in stored:
                    self.consumer.seek(tp, stored[tp])
                else:
                    await self.consumer.seek_to_beginning(tp)
                    with contextlib.suppress(KafkaError, TimeoutError):  # for lag only
                        stored[tp] = await asyncio.wait_for(self.consumer.position(tp), 10)
            self.progress.positions(stored)
            self.consumer.resume(*wanted)
            self.pending_seek -= wanted | (self.pending_seek - self.consumer.assignment())
            self.epoch += 1

    def _prepare(self, batch: dict[TopicPartition, list[Any]], epoch: int) -> Prepared[T]:
        """Parse every record on its own: good events (once each), poison, next offsets."""
        started = time.perf_counter()
        now = utc_now()  # once a batch: the clock costs
        latest = now + self.config.future_tolerance
        oldest = self.oldest_id_time(now)

        def parse(value: bytes | None) -> T:
            item = self.parse(value)
            if item.occurred_at > latest:
                raise Poison(f"occurred_at {item.occurred_at.isoformat()} is too far in the future")
            made = uuid7_time(item.event_id)
            if made is None:
                raise Poison("event_id is not a UUIDv7: it cannot be deduplicated by day")
            if not oldest <= made <= latest:
                raise Poison(
                    f"event_id was made at {made.isoformat()}, outside the dedupe window "
                    f"({oldest.isoformat()} to {latest.isoformat()}): a replay of it could not "
                    "be recognised"
                )
            return item

        prepared = prepare(batch, parse, epoch)
        self.stats.prepare_s += time.perf_counter() - started
        return prepared

    async def _store(self, batch: Prepared[T]) -> None:
        """Dead letters first, then one transaction: claim ids, apply, store offsets."""
        async with self.batch_lock:
            if batch.epoch != self.epoch or self.pending_seek:
                # A rebalance happened since the fetch: the new owner (maybe us again,
                # after a seek) reads these records from the offsets in PostgreSQL.
                return
            await self.writer.write(batch, self.dlq)
            self.progress.committed(batch.offsets)
            # Kafka's offsets are advisory (lag monitoring): committed in the background,
            # after the transaction, never holding up the next batch.
            self._kafka_offsets.update(batch.offsets)
            if self._kafka_commit is None or self._kafka_commit.done():
                self._kafka_commit = asyncio.create_task(self._commit_kafka())

    async def _commit_kafka(self) -> None:
        offsets, self._kafka_offsets = self._kafka_offsets, {}
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance moved a partition: PostgreSQL holds the truth
            log.warning("kafka offset commit failed", extra={"error": repr(exc)})

    async def _watch_ends(self) -> None:
        await watch_ends(self.consumer, self.progress, self.config.lag_interval_s)

    def oldest_id_time(self, now: datetime) -> datetime:
        """The earliest event id time kept: the start of the oldest day within the window."""
        return day_start((now - self.config.dedupe_window).date())

    def _before(self, service: BeforeBatch[T] | None) -> BeforeBatch[T]:
        async def before(conn: Conn, items: list[T]) -> None:
            days = {uuid7_time(i.event_id) for i in items}
            await self.seen_days.ensure(conn, {d.date() for d in days if d is not None})
            if service is not None:
                await service(conn, items)

        return before

    async def _upkeep(self, conn: Conn) -> None:
        """Event ids' days: made ahead, dropped past the window; then the service's own."""
        now = utc_now()
        first = self.oldest_id_time(now).date()
        await self.seen_days.ensure(
            conn, days_between(first, now.date() + timedelta(self.config.days_ahead))
        )
        dropped = await self.seen_days.drop_before(conn, first)
        if dropped:
            log.info("forgot the event ids of %d days past the dedupe window", len(dropped))
        if self.upkeep is not None:
            await self.upkeep(conn)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval_s)
            try:
                await self.cleanup()
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:  # upkeep is retried
                log.warning("partition upkeep failed; next try later", extra={"error": repr(exc)})

    async def cleanup(self) -> None:
        """Days made ahead and dropped past retention (event ids, the service's tables)."""
        async with self.pool.acquire() as conn:
            await self._upkeep(conn)
