"""SQL of the audit log: an entry written, its month partitions made ahead and dropped past
retention, and the filtered, cursor-paged reads of ``GET /v1/organization/audit_logs``.

Reads are built with only the conditions given, so a time range lets PostgreSQL skip the
months outside it. The order is newest first by ``(effective_at, id)``, a total order: a
cursor is the entry it names, never an offset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from services.keys.rows import Row
from shared.events import AuditEvent

if TYPE_CHECKING:
    from services.keys.rows import Executor

_COLUMNS = (
    "id, effective_at, type, actor_type, actor_id, actor_hint, project_id, resource_id,"
    " changes, ip, user_agent, request_id"
)
_PARTITION = re.compile(r"^audit_logs_y(\d{4})m(\d{2})$")


async def insert_entry(conn: Executor, event: AuditEvent) -> None:
    """The entry, inside the transaction of the change it records."""
    await conn.execute(
        f"INSERT INTO audit_logs ({_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)",
        event.id,
        event.occurred_at,
        event.type,
        event.actor.type,
        event.actor.id,
        event.actor.hint,
        event.project_id,
        event.resource_id,
        json.dumps(event.changes, separators=(",", ":")),
        event.ip,
        event.user_agent,
        event.request_id,
    )


def partition_name(month: datetime) -> str:
    return f"audit_logs_y{month.year:04d}m{month.month:02d}"


async def ensure_partitions(conn: Executor, months: Sequence[datetime]) -> list[str]:
    """Create the partition of each month (its first instant, UTC) that is missing; the
    names created. Replicas doing so at once are serialised by an advisory lock."""
    created: list[str] = []
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('keys-audit-partitions'))")
    existing = set(await partitions(conn))
    for start in months:
        name = partition_name(start)
        if name in existing:
            continue
        end = next_month(start)
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF audit_logs'
            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        created.append(name)
    return created


async def partitions(conn: Executor) -> list[str]:
    """The audit log's month partitions, oldest first."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'audit_logs'::regclass ORDER BY c.relname"
    )
    return [r["relname"] for r in rows if _PARTITION.match(r["relname"])]


async def drop_partitions_before(conn: Executor, month: datetime) -> list[str]:
    """Drop every month partition wholly before ``month``: retention, without a DELETE."""
    dropped: list[str] = []
    for name in await partitions(conn):
        if name < partition_name(month):
            await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
    return dropped


def next_month(start: datetime) -> datetime:
    """The first instant of the month after start's (start: a month's first instant)."""
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


@dataclass(frozen=True)
class AuditQuery:
    """The filters of a read: each None (or empty) is no filter; the time range is
    ``gte <= effective_at < lt``."""

    gte: datetime | None = None
    lt: datetime | None = None
    project_ids: Sequence[str] = ()
    event_types: Sequence[str] = ()
    actor_ids: Sequence[str] = ()
    resource_ids: Sequence[str] = ()
    within: Sequence[str] | None = None  # the caller's scope; None: the organization


async def find_entry(conn: Executor, entry_id: str, query: AuditQuery) -> Row | None:
    """The entry with that id, if the caller may see it (a cursor's position)."""
    where, args = _conditions(query, with_filters=False)
    args.append(entry_id)
    return await conn.fetchrow(
        f"SELECT effective_at, id FROM audit_logs WHERE {where} AND id = ${len(args)}", *args
    )


async def read_entries(
    conn: Executor,
    query: AuditQuery,
    *,
    limit: int,
    after: Row | None = None,
    before: Row | None = None,
) -> list[Row]:
    """Up to limit entries, newest first: those older than ``after``; or, for the page before
    ``before``, the ones just newer than it."""
    where, args = _conditions(query, with_filters=True)
    order = "DESC"
    cursor = after if after is not None else before
    if cursor is not None:
        args += [cursor["effective_at"], cursor["id"]]
        sign = "<" if after is not None else ">"
        where += f" AND (effective_at, id) {sign} (${len(args) - 1}, ${len(args)})"
        order = "DESC" if after is not None else "ASC"
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_logs WHERE {where}"
        f" ORDER BY effective_at {order}, id {order} LIMIT ${len(args)}",
        *args,
    )
    return rows if order == "DESC" else list(reversed(rows))


def _conditions(query: AuditQuery, *, with_filters: bool) -> tuple[str, list[object]]:
    parts = ["true"]
    args: list[object] = []

    def add(sql: str, value: object) -> None:
        args.append(value)
        parts.append(sql.replace("$?", f"${len(args)}"))

    if query.within is not None:
        add("project_id = ANY($?::text[])", list(query.within))
    if with_filters:
        if query.gte is not None:
            add("effective_at >= $?", query.gte)
        if query.lt is not None:
            add("effective_at < $?", query.lt)
        for column, values in (
            ("project_id", query.project_ids),
            ("type", query.event_types),
            ("actor_id", query.actor_ids),
            ("resource_id", query.resource_ids),
        ):
            if values:
                add(f"{column} = ANY($?::text[])", list(values))
    return " AND ".join(parts), args
