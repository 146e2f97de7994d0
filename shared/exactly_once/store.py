"""The SQL of the exactly-once plumbing: event-id dedupe and offsets stored in PostgreSQL.

Tables (``migrations/``, applied to each ledger service's schema before the service's own
migrations: ``migrations()``): ``processed_events(event_id uuid primary key, seen_at
timestamptz)``, partitioned by the day of its UUIDv7 ids (``partitions.py``), and
``consumer_offsets(consumer_group, topic, partition, next_offset)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from shared.db import MigrationSet
from shared.exactly_once.types import ConsumerConfig, Identified

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

# The plumbing's own versions, recorded apart from the service's (shared/db.py).
TABLES = MigrationSet(Path(__file__).parent / "migrations", table="ledger_schema_migrations")


def migrations(service_folder: Path) -> tuple[MigrationSet, MigrationSet]:
    """A ledger service's migrations: the plumbing's tables first, then its own ledgers'."""
    return (TABLES, MigrationSet(service_folder))


def columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """The rows' columns, one list each: the arrays a ledger's ``unnest`` upsert takes."""
    return [list(column) for column in zip(*rows, strict=True)]


async def claim(conn: Conn, items: Sequence[Identified]) -> list[Any]:
    """Record the batch's event ids; return only the items not seen before."""
    if not items:
        return []
    rows = await conn.fetch(
        "INSERT INTO processed_events (event_id) SELECT unnest($1::uuid[])"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        [i.event_id for i in items],
    )
    fresh = {r["event_id"] for r in rows}
    return [i for i in items if i.event_id in fresh]


async def write_offsets(
    conn: Conn, config: ConsumerConfig, offsets: dict[TopicPartition, int]
) -> None:
    # GREATEST: a zombie finishing an old batch late never moves an offset backwards.
    await conn.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)"
        " SELECT $1, unnest($2::text[]), unnest($3::int[]), unnest($4::bigint[])"
        " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET"
        " next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset),"
        " updated_at = now()",
        config.group_id,
        [tp.topic for tp in offsets],
        [tp.partition for tp in offsets],
        list(offsets.values()),
    )


async def read_offsets(
    conn: Conn, config: ConsumerConfig, tps: set[TopicPartition]
) -> dict[TopicPartition, int]:
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets"
        " WHERE consumer_group = $1 AND topic = ANY($2::text[])",
        config.group_id,
        sorted({tp.topic for tp in tps}),
    )
    stored = {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    return {tp: offset for tp, offset in stored.items() if tp in tps}
