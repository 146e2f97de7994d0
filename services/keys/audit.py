"""The audit log: one entry per change the key service makes, in that change's transaction.

``record`` writes the entry to the ``audit_logs`` table and to the outbox (topic
``audit.events``, keyed by project id or ``organization``) with the change's own connection,
so the entry commits with the change or not at all. An entry's ``changes`` are the fields that
changed, before and after (names, policies, scopes, permissions, hints, status, default);
never a secret nor a key hash (``_SECRET_FIELDS`` are refused, whatever a caller passes).

The table is partitioned by month on ``effective_at``: ``Partitions`` makes the current month's
and the next ``months_ahead`` at start and every hour, and drops those past retention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from services.keys import audit_repository as audit_repo
from services.keys import repository as repo
from shared.errors import BadRequest
from shared.events import AuditActor, AuditEvent, AuditEventType, utc_now
from shared.exactly_once.retry import READ_ERRORS
from shared.ids import uuid7
from shared.worker import Backoff, Worker

if TYPE_CHECKING:
    from services.keys.rows import Conn, Row

log = logging.getLogger(__name__)
ORGANIZATION = "organization"  # the message key of an entry outside any one project
_SECRET_FIELDS = frozenset({"key", "value", "secret", "key_hash", "previous_key_hash"})
MAINTAIN_EVERY_S = 3600.0


@dataclass(frozen=True)
class AuditContext:
    """What the audit log records of the request that made a change."""

    actor: AuditActor
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


def entry(
    context: AuditContext,
    event_type: AuditEventType,
    *,
    project_id: str | None,
    resource_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> AuditEvent:
    """The audit event of one change."""
    for side in (before, after):
        leaked = _SECRET_FIELDS.intersection(side or {})
        assert not leaked, f"an audit entry never carries {sorted(leaked)}"
    event_id = uuid7()
    return AuditEvent(
        event_id=event_id,
        id=f"audit_log-{event_id.hex}",
        occurred_at=now,
        type=event_type,
        actor=context.actor,
        project_id=project_id,
        resource_id=resource_id,
        changes={"before": before, "after": after},
        ip=context.ip,
        user_agent=context.user_agent,
        request_id=context.request_id,
    )


async def record(conn: Conn, topic: str, event: AuditEvent) -> None:
    """Write the entry and its outbox message with the change's own connection."""
    await audit_repo.insert_entry(conn, event)
    await repo.enqueue(conn, topic, event.project_id or ORGANIZATION, event.to_bytes())


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of moment's month, moved by offset months."""
    index = moment.astimezone(UTC).year * 12 + moment.astimezone(UTC).month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


class Partitions:
    """Keeps the audit log's month partitions made ahead, and drops those past retention."""

    def __init__(self, pool: asyncpg.Pool, *, months_ahead: int, retention_months: int) -> None:
        self.pool = pool
        self.months_ahead = months_ahead
        self.retention_months = retention_months
        self.worker = Worker(
            "keys-audit-partitions",
            self._maintain_forever,
            expected=READ_ERRORS,
            backoff=Backoff(1.0, 60.0),
        )

    async def maintain(self, now: datetime | None = None) -> tuple[list[str], list[str]]:
        """Create the missing months from now's to ``months_ahead`` after it; drop the months
        older than ``retention_months`` (0: keep all). The names created and dropped."""
        now = now or utc_now()
        months = [month_start(now, i) for i in range(self.months_ahead + 1)]
        async with self.pool.acquire() as conn, conn.transaction():
            created = await audit_repo.ensure_partitions(conn, months)
            dropped: list[str] = []
            if self.retention_months > 0:
                oldest_kept = month_start(now, -self.retention_months)
                dropped = await audit_repo.drop_partitions_before(conn, oldest_kept)
        if created or dropped:
            log.info(
                "audit partitions",
                extra={"partitions_created": created, "partitions_dropped": dropped},
            )
        return created, dropped

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop(grace_s=2.0)

    async def _maintain_forever(self) -> None:
        while not self.worker.stopping.is_set():
            await self.maintain()
            self.worker.succeeded()
            if await self.worker.pause(MAINTAIN_EVERY_S):
                return


async def read_page(
    conn: Conn,
    query: audit_repo.AuditQuery,
    *,
    limit: int,
    after: str | None,
    before: str | None,
) -> tuple[list[Row], bool]:
    """A page of entries, newest first, and whether more follow (past ``after``, or before
    ``before`` when paging back). A cursor the caller may not see is refused as unknown."""
    cursors: dict[str, Row | None] = {}
    for name, given in (("after", after), ("before", before)):
        if given is not None:
            cursors[name] = await audit_repo.find_entry(conn, given, query)
            if cursors[name] is None:
                raise BadRequest(f"Invalid '{name}': no entry has the id '{given}'.", param=name)
    rows = await audit_repo.read_entries(
        conn, query, limit=limit + 1, after=cursors.get("after"), before=cursors.get("before")
    )
    more = len(rows) > limit
    if before is not None and more:
        return rows[1:], more  # the page just newer than before: drop the oldest extra
    return rows[:limit], more
