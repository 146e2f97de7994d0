"""The vocabulary of the ledger consumers: poison, parsed events, configuration, counters."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import asyncpg
from aiokafka import TopicPartition
from pydantic import ValidationError

from shared.kafka_security import KafkaAccess

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection, whether taken from a pool or opened on its own.
    Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class Poison(Exception):
    """A record that can never be applied; it goes to the DLQ with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def invalid(cls, exc: ValidationError, what: str = "usage event") -> Poison:
        """Poison naming the first few fields that failed validation, and how."""
        errors = exc.errors(include_url=False)
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'record'}: {e.get('msg')}"
            for e in errors[:3]
        ]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return cls(f"invalid {what}: " + "; ".join(parts) + more)


class Identified(Protocol):
    """What the plumbing needs of a parsed event: its dedupe key and its time."""

    @property
    def event_id(self) -> uuid.UUID: ...

    @property
    def occurred_at(self) -> datetime: ...


T = TypeVar("T", bound=Identified)
Apply: TypeAlias = "Callable[[Conn, list[T]], Awaitable[None]]"
# A ledger's own storage upkeep: before a batch's transaction (its items), or on a schedule.
BeforeBatch: TypeAlias = "Callable[[Conn, list[T]], Awaitable[None]]"
Upkeep: TypeAlias = "Callable[[Conn], Awaitable[None]]"


@dataclass(frozen=True)
class ConsumerConfig:
    """Where to read, who we are, and the knobs that matter for exactness and speed."""

    bootstrap: str | KafkaAccess
    topic: str
    dlq_topic: str
    group_id: str
    client_id: str
    max_batch: int = 5000
    poll_timeout_ms: int = 200
    session_timeout_ms: int = 10_000
    future_tolerance: timedelta = timedelta(minutes=5)
    dedupe_window: timedelta = timedelta(days=8)
    days_ahead: int = 2  # day partitions made ahead of today
    cleanup_interval_s: float = 600.0
    stall_after_s: float = 60.0  # no commit this long while lag > 0: not ready
    lag_interval_s: float = 5.0  # how often end offsets are asked of the broker
    max_dead_letter_bytes: int = 900_000  # a dead letter's JSON at most (Kafka's limit is 1 MB)


@dataclass
class ConsumerStats:
    """Counters for health and tests; never used for correctness."""

    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0  # acknowledged by the broker: unparsable and refused records
    refused: int = 0  # of those, records the database refused (found by splitting)
    dead_letters_lost: int = 0  # letters the broker refused for good (logged, not retried)
    db_retries: int = 0
    last_error: str | None = None
    prepare_s: float = 0.0  # time spent parsing batches (CPU, in this process)
    store_s: float = 0.0  # time spent in batch transactions (mostly waiting on PostgreSQL)
    assigned: set[TopicPartition] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready values."""
        return {
            "partitions": sorted(tp.partition for tp in self.assigned),
            "batches": self.batches,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "refused": self.refused,
            "dead_letters_lost": self.dead_letters_lost,
            "db_retries": self.db_retries,
            "last_error": self.last_error,
            "prepare_s": round(self.prepare_s, 3),
            "store_s": round(self.store_s, 3),
        }
