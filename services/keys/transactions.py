"""Every change to keys in one transaction with its events, and seen by the gateways only after
it committed.

The key service's unit of work, apart from its operations (``service.py``): a transaction on a
pooled connection; ``publish`` writes a key's new state to the outbox (the relay takes it to
``keys.events``) and wakes the relay when the transaction commits; once it committed, the
states it published are written straight to the gateways' Redis (``mirror.py``), since Kafka
may be down and a revocation must not wait for it. A database that is away surfaces as
``DatabaseUnavailable`` (503), which the caller may retry. Every state it makes is signed
with the keyring's signing entry (``shared/state_mac.py``): the gateways trust no other.
``audit`` writes the change's audit log entry (``audit.py``) with the same connection: no
change commits without its entry, and no entry without its change.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.exceptions import InternalClientError

from services.keys import repository as repo
from services.keys.audit import AuditContext, entry, record
from services.keys.errors import DatabaseUnavailable
from services.keys.mirror import StateMirror
from services.keys.rows import Row, json_value
from shared.events import AuditEventType, KeyEvent, KeyEventType, KeyState
from shared.exactly_once.retry import RETRYABLE
from shared.state_mac import Keyring

if TYPE_CHECKING:
    from services.keys.rows import Conn

log = logging.getLogger("services.keys.service")  # one logger for the key service's changes

# A database that is away, or a connection the driver left broken by an outage: retry later.
OUTAGE: tuple[type[BaseException], ...] = (*RETRYABLE, InternalClientError)

_JSON_FIELDS = ("rate_limits", "budget", "project_rate_limits", "project_budget")
_ROW_FIELDS = tuple(name for name in KeyState.model_fields if name not in ("key_id", "mac"))


def key_state(row: Row) -> KeyState:
    """The key's whole state as caches hold it, its project's policy too (never the secret);
    unsigned (``Transactions.state_of`` signs it)."""
    values = {name: row[name] for name in _ROW_FIELDS}
    for name in _JSON_FIELDS:
        values[name] = json_value(values[name])
    return KeyState.model_validate(values | {"key_id": row["id"]})


class Transactions:
    """Transactions whose key changes are announced through the outbox, then mirrored."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topic: str,
        channel: str,
        mirror: StateMirror | None,
        keyring: Keyring,
        audit_topic: str,
        admin_channel: str,
    ) -> None:
        self.pool = pool
        self.keyring = keyring
        self.topic = topic
        self.channel = channel
        self.audit_topic = audit_topic
        self.admin_channel = admin_channel  # admin key changes, for every replica's cache
        self.mirror = mirror
        # Per open transaction (by its connection), the key states it wrote to the outbox.
        self._changed: dict[int, list[KeyState]] = {}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A connection in a transaction; DatabaseUnavailable when the database is away."""
        changed: list[KeyState] = []
        try:
            async with self.pool.acquire() as conn:
                self._changed[id(conn)] = changed
                try:
                    async with conn.transaction():
                        yield conn
                finally:
                    del self._changed[id(conn)]
        except OUTAGE as exc:
            # An outage (or a lost serialisation race): the caller may simply retry.
            log.warning("database unavailable: %s", type(exc).__name__)
            raise DatabaseUnavailable("The key database is unavailable; retry shortly.") from exc
        # Committed: only now may the gateways see it (a rolled-back change never existed).
        if changed and self.mirror is not None:
            await self.mirror.write(changed)

    async def publish(self, conn: Conn, row: Row, event_type: KeyEventType, now: datetime) -> None:
        """Announce the key row's new state, in the transaction that wrote it."""
        state = self.state_of(row)
        event = KeyEvent(type=event_type, occurred_at=now, **state.model_dump())
        await repo.enqueue(conn, self.topic, row["id"], event.to_bytes())
        await repo.notify(conn, self.channel)
        self._changed[id(conn)].append(state)

    async def audit(
        self,
        conn: Conn,
        context: AuditContext,
        event_type: AuditEventType,
        *,
        project_id: str | None,
        resource_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        """Record the change in the audit log, in the transaction that made it."""
        event = entry(
            context,
            event_type,
            project_id=project_id,
            resource_id=resource_id,
            before=before,
            after=after,
            now=now,
        )
        await record(conn, self.audit_topic, event)
        await repo.notify(conn, self.channel)

    def state_of(self, row: Row) -> KeyState:
        """The key row's state, signed: what the gateways will trust."""
        return self.keyring.sign(key_state(row))
