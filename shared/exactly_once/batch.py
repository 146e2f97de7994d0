"""One fetched batch into PostgreSQL exactly once; the records it refuses are dead-lettered.

Order of work for a batch (the invariant: a dead letter is acknowledged by Kafka before the
offsets past its record are committed in PostgreSQL, so a crash can duplicate a dead letter
but never lose one):

1. Records that did not parse go to the DLQ.
2. One transaction: the good events are claimed (``processed_events``) and applied by
   halves in savepoints (shared/exactly_once/split.py). When none is refused, the partitions'
   next offsets are written and the transaction commits: done.
3. When some are refused for their values, the transaction is rolled back, the refused
   records go to the DLQ (with SQLSTATE and message), and step 2 runs again without them.
   Each round removes at least one record, so this ends; the rest commits exactly once.

Transient errors retry the whole transaction with backoff. Errors no record causes
(missing table, permission denied, a broken schema that refuses even a known-good record)
stall the consumer: it logs, counts ``db_retries`` and keeps retrying, never dead-letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

import asyncpg
from aiokafka import TopicPartition

from shared.exactly_once import store as ledger_store
from shared.exactly_once.dlq import DeadLetterSender
from shared.exactly_once.retry import RETRYABLE, backoff
from shared.exactly_once.split import CONTROL_SIZE, NotRecordSpecific, Refused, confirm, split_apply
from shared.exactly_once.types import (
    Apply,
    BeforeBatch,
    ConsumerConfig,
    ConsumerStats,
    Poison,
    T,
)

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A parsed batch, waiting for its transaction."""

    items: list[T]
    sources: dict[uuid.UUID, Any]  # each event's (first) record, for its dead letter
    poison: list[tuple[Any, str]]
    offsets: dict[TopicPartition, int]
    epoch: int


def prepare(
    batch: dict[TopicPartition, list[Any]], parse: Callable[[bytes | None], T], epoch: int
) -> Prepared[T]:
    """Parse every record on its own: good events (once each), poison, next offsets."""
    good: dict[uuid.UUID, T] = {}
    sources: dict[uuid.UUID, Any] = {}
    poison: list[tuple[Any, str]] = []
    offsets: dict[TopicPartition, int] = {}
    for tp, records in batch.items():
        for record in records:
            offsets[tp] = record.offset + 1
            try:
                item = parse(record.value)
            except Poison as exc:
                poison.append((record, exc.reason))
                continue
            # The same event twice in one batch (a producer retry) counts once.
            if item.event_id not in good:
                good[item.event_id] = item
                sources[item.event_id] = record
    return Prepared(list(good.values()), sources, poison, offsets, epoch)


class _Found(Exception):
    """Raised inside the transaction to roll it back: these records were refused."""

    def __init__(self, refused: list[Refused[Any]]) -> None:
        super().__init__(f"{len(refused)} records refused")
        self.refused = refused


class BatchWriter(Generic[T]):
    """Stores prepared batches for one consumer, and counts what happened."""

    def __init__(
        self,
        config: ConsumerConfig,
        pool: asyncpg.Pool,
        apply: Apply[T],
        stats: ConsumerStats,
        before: BeforeBatch[T] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.apply = apply
        self.stats = stats
        self.before = before  # storage the batch needs (day partitions), in its own transaction
        self.control: list[T] = []  # events the database accepted: see shared/exactly_once/split.py

    async def write(self, batch: Prepared[T], dlq: DeadLetterSender) -> None:
        """Dead letters first, then the batch's transaction, as the module docstring says."""
        if batch.poison:
            await self.dead_letters(dlq, batch.poison)
        items = batch.items
        started = time.perf_counter()
        if self.before is not None and items:
            before = self.before
            await self.retrying(lambda conn: before(conn, items))
        while True:
            outcome = await self.retrying(
                lambda conn: self._attempt(conn, items, batch.offsets)  # noqa: B023
            )
            if isinstance(outcome, int):
                break
            await self.dead_letters(
                dlq, [(batch.sources[r.item.event_id], r.reason) for r in outcome]
            )
            self.stats.refused += len(outcome)
            gone = {id(r.item) for r in outcome}
            items = [i for i in items if id(i) not in gone]
        self.stats.store_s += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.applied += outcome
        self.stats.duplicates += len(items) - outcome

    async def dead_letters(self, dlq: DeadLetterSender, poison: Sequence[tuple[Any, str]]) -> None:
        outcome = await dlq.send(poison)
        self.stats.dead_letters += outcome.sent
        self.stats.dead_letters_lost += outcome.lost

    async def _attempt(
        self, conn: Conn, items: list[T], offsets: dict[TopicPartition, int]
    ) -> int | list[Refused[T]]:
        try:
            async with conn.transaction():
                suspects = await split_apply(conn, items, self._claim_and_apply)
                result = await confirm(
                    conn, suspects, self.control, self._claim_and_apply, self.apply
                )
                if result.refused:
                    raise _Found(result.refused)  # noqa: TRY301 - rolls the transaction back
                await ledger_store.write_offsets(conn, self.config, offsets)
        except _Found as found:
            refused: list[Refused[T]] = found.refused
            return refused
        return result.done

    async def _claim_and_apply(self, conn: Conn, items: list[T]) -> int:
        fresh = await ledger_store.claim(conn, items)
        await self.apply(conn, fresh)
        if fresh:
            self.control = fresh[:CONTROL_SIZE]
        return len(fresh)

    async def retrying(self, work: Callable[[Conn], Awaitable[Any]]) -> Any:
        """Run work on a pooled connection until it succeeds; errors wait and retry."""
        attempt = 0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    return await work(conn)
            except RETRYABLE as exc:
                attempt += 1
                self.stats.db_retries += 1
                self.stats.last_error = repr(exc)
                log.warning("database error, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(backoff(attempt))
            except (asyncpg.PostgresError, NotRecordSpecific) as exc:
                # No record's fault (a missing table, permission denied, a broken schema):
                # stall loudly and keep trying rather than skip or drop anything.
                attempt += 1
                self.stats.db_retries += 1
                self.stats.last_error = repr(exc)
                log.exception("database error that is no record's fault; stalled, retrying")
                await asyncio.sleep(max(1.0, backoff(attempt, cap=30.0)))
