"""The key service's logic: projects and keys, each change and its event in one transaction.

After a transaction that changed keys commits, their new states are also written straight to
the gateways' Redis (``mirror.py``): Kafka may be down, a revocation must not wait for it.

Lock order, so that concurrent changes cannot deadlock: the project row first (taken by
whatever may move the project's default, and by a project's policy change), then key rows.
Every change to a key locks its row before writing its outbox message, so per key the outbox
order is the commit order.

Every key state carries its project's policy (``project_rate_limits``, ``project_budget``),
read by the statement that writes the key row. A project policy change locks the project,
writes it, then bumps every non-revoked key of the project in the same transaction: a key
change racing it either committed first (the project change then writes a newer version over
it) or waits for the key row lock, and the statement after that wait sees the new policy. So
a key's newest version always carries its project's newest policy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
from asyncpg.exceptions import InternalClientError

from services.keys import repository as repo
from services.keys.errors import (
    DatabaseUnavailable,
    InvalidExpiry,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
    ProjectNotFound,
)
from services.keys.mirror import StateMirror
from services.keys.policies import (
    KEY_FIELDS,
    PROJECT_FIELDS,
    check_models,
    key_policy,
    stored,
)
from services.keys.repository import KeyPolicy, Row, json_value
from shared import apikeys
from shared.errors import BadRequest
from shared.events import KeyEvent, KeyEventType, KeyState, utc_now
from shared.ids import resource_id
from shared.ledger.retry import RETRYABLE

if TYPE_CHECKING:
    from services.keys.repository import Conn

log = logging.getLogger(__name__)

# A database that is away, or a connection the driver left broken by an outage: retry later.
OUTAGE: tuple[type[BaseException], ...] = (*RETRYABLE, InternalClientError)


@dataclass(frozen=True)
class Created:
    """A key row and its secret, which exists only in this object and the HTTP answer."""

    row: Row
    secret: str


_JSON_FIELDS = ("rate_limits", "budget", "project_rate_limits", "project_budget")


def key_state(row: Row) -> KeyState:
    """The key's whole state as caches hold it, its project's policy too (never the secret)."""
    values = {name: row[name] for name in KeyState.model_fields if name != "key_id"}
    for name in _JSON_FIELDS:
        values[name] = json_value(values[name])
    return KeyState.model_validate(values | {"key_id": row["id"]})


def view_status(row: Row, now: datetime) -> Literal["active", "expired", "revoked"]:
    """What a user sees: revoked, expired (by its expires_at), or active."""
    if row["status"] == "revoked":
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


class KeyService:
    """Projects and keys on PostgreSQL, every key change announced through the outbox."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topic: str,
        channel: str,
        max_grace_s: int,
        models: Collection[str],
        mirror: StateMirror | None = None,
    ) -> None:
        self.pool = pool
        self.models = frozenset(models)  # the catalogue's ids, which allowed_models may name
        self.topic = topic
        self.channel = channel
        self.max_grace_s = max_grace_s
        self.mirror = mirror
        # Per open transaction (by its connection), the key states it wrote to the outbox.
        self._changed: dict[int, list[KeyState]] = {}

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
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

    async def _publish(self, conn: Conn, row: Row, event_type: KeyEventType, now: datetime) -> None:
        state = key_state(row)
        event = KeyEvent(type=event_type, occurred_at=now, **state.model_dump())
        await repo.enqueue(conn, self.topic, row["id"], event.to_bytes())
        await repo.notify(conn, self.channel)
        self._changed[id(conn)].append(state)

    # Projects

    async def create_project(self, name: str) -> Row:
        """A new project."""
        async with self._transaction() as conn:
            return await repo.insert_project(conn, resource_id("proj"), name, utc_now())

    async def get_project(self, project_id: str) -> Row:
        """The project, or ProjectNotFound."""
        async with self._transaction() as conn:
            return await self._project(conn, project_id)

    async def update_project(self, project_id: str, changes: Mapping[str, Any]) -> Row:
        """Change the project's name and policy (fields not in changes stay as they are).

        A policy change re-publishes every non-revoked key of the project (``key.updated``, a
        new version each) in the same transaction: that is how it reaches the gateways.
        """
        now = utc_now()
        async with self._transaction() as conn:
            row = await self._project(conn, project_id, lock=True)
            old = {"name": row["name"]} | {f: json_value(row[f]) for f in PROJECT_FIELDS}
            new = old | stored(changes)
            if new == old:
                return row
            row = await repo.update_project(
                conn,
                project_id,
                name=new["name"],
                rate_limits=new["rate_limits"],
                budget=new["budget"],
                now=now,
            )
            republished = 0
            if any(new[f] != old[f] for f in PROJECT_FIELDS):
                for key in await repo.touch_project_keys(conn, project_id, now):
                    await self._publish(conn, key, "key.updated", now)
                    republished += 1
        log.info(
            "project updated", extra={"project_id": project_id, "keys_republished": republished}
        )
        return row

    async def list_projects(self, limit: int, after: str | None) -> tuple[list[Row], bool]:
        """A page of projects and whether more follow."""
        async with self._transaction() as conn:
            await self._cursor(conn, "projects", after)
            rows = await repo.list_projects(conn, limit + 1, after)
        return rows[:limit], len(rows) > limit

    async def _cursor(self, conn: Conn, table: str, after: str | None) -> None:
        if after is not None and not await repo.exists(conn, table, after):
            raise BadRequest(f"Invalid 'after': no item has the id '{after}'.", param="after")

    async def _project(self, conn: Conn, project_id: str, *, lock: bool = False) -> Row:
        row = await repo.get_project(conn, project_id, lock=lock)
        if row is None:
            raise ProjectNotFound(project_id)
        return row

    async def _key(self, conn: Conn, project_id: str, key_id: str, *, lock: bool = False) -> Row:
        row = await repo.get_key(conn, project_id, key_id, lock=lock)
        if row is None:
            raise KeyNotFound(key_id)
        return row

    async def _changeable(self, conn: Conn, project_id: str, key_id: str, now: datetime) -> Row:
        """The key, locked, when it can still change: KeyRevoked or KeyExpired otherwise."""
        row = await self._key(conn, project_id, key_id, lock=True)
        status = view_status(row, now)
        if status == "revoked":
            raise KeyRevoked(key_id)
        if status == "expired":
            raise KeyExpired(key_id)
        return row

    # Keys

    async def create_key(
        self,
        project_id: str,
        name: str,
        expires_at: datetime | None,
        policy: Mapping[str, Any] | None = None,
    ) -> Created:
        """A new key with its policy (the fields of KEY_FIELDS that are given, as the API's
        types); the project's first key (when it has no default) becomes its default."""
        now = utc_now()
        if expires_at is not None and expires_at <= now:
            raise InvalidExpiry("'expires_at' must be in the future.", param="expires_at")
        given = stored(policy or {})
        check_models(given.get("allowed_models"), self.models)
        secret = apikeys.generate()
        async with self._transaction() as conn:
            await self._project(conn, project_id, lock=True)
            row = await repo.insert_key(
                conn,
                key_id=resource_id("key"),
                project_id=project_id,
                name=name,
                hint=apikeys.hint(secret),
                key_hash=apikeys.hash_key(secret),
                is_default=not await repo.has_default(conn, project_id),
                expires_at=expires_at,
                policy=KeyPolicy(**given),
                now=now,
            )
            await self._publish(conn, row, "key.created", now)
        log.info("key created", extra={"key_id": row["id"], "project_id": project_id})
        return Created(row, secret)

    async def get_key(self, project_id: str, key_id: str) -> Row:
        """The key (revoked ones too), or ProjectNotFound / KeyNotFound."""
        async with self._transaction() as conn:
            await self._project(conn, project_id)
            return await self._key(conn, project_id, key_id)

    async def list_keys(
        self, project_id: str, *, include_revoked: bool, limit: int, after: str | None
    ) -> tuple[list[Row], bool]:
        """A page of the project's keys and whether more follow."""
        async with self._transaction() as conn:
            await self._project(conn, project_id)
            await self._cursor(conn, "api_keys", after)
            rows = await repo.list_keys(
                conn, project_id, include_revoked=include_revoked, limit=limit + 1, after=after
            )
        return rows[:limit], len(rows) > limit

    async def update_key(self, project_id: str, key_id: str, changes: Mapping[str, Any]) -> Row:
        """Change a key's name and policy: the fields in changes (None removes a limit), the
        rest as they are. A key that would not change publishes nothing; a revoked one is
        KeyRevoked."""
        now = utc_now()
        given = stored(changes)
        check_models(given.get("allowed_models"), self.models)
        async with self._transaction() as conn:
            await self._project(conn, project_id)
            row = await self._key(conn, project_id, key_id, lock=True)
            if row["status"] == "revoked":
                raise KeyRevoked(key_id)
            old = {"name": row["name"]} | vars(key_policy(row))
            new = old | given
            if new == old:
                return row
            policy = KeyPolicy(**{f: new[f] for f in KEY_FIELDS})
            row = await repo.update_key(conn, key_id, new["name"], policy, now)
            await self._publish(conn, row, "key.updated", now)
        log.info(
            "key updated",
            extra={"key_id": key_id, "project_id": project_id, "fields": sorted(changes)},
        )
        return row

    async def set_default(self, project_id: str, key_id: str) -> Row:
        """Make the key the project's default; the old default's new state is published too."""
        now = utc_now()
        async with self._transaction() as conn:
            # The project lock serialises racing calls; the partial unique index backs it up.
            await self._project(conn, project_id, lock=True)
            row = await self._changeable(conn, project_id, key_id, now)
            if row["is_default"]:
                return row
            previous = await repo.clear_default(conn, project_id, now)
            if previous is not None:
                await self._publish(conn, previous, "key.default_changed", now)
            row = await repo.make_default(conn, key_id, now)
            await self._publish(conn, row, "key.default_changed", now)
        log.info("default key set", extra={"key_id": key_id, "project_id": project_id})
        return row

    async def rotate_key(self, project_id: str, key_id: str, grace_period_s: int) -> Created:
        """A new secret for the key; the old one keeps working for grace_period_s seconds."""
        if grace_period_s > self.max_grace_s:
            raise InvalidExpiry(
                f"'grace_period_seconds' must be at most {self.max_grace_s}.",
                param="grace_period_seconds",
                code="invalid_grace_period",
            )
        now = utc_now()
        secret = apikeys.generate()
        async with self._transaction() as conn:
            await self._project(conn, project_id)
            row = await self._changeable(conn, project_id, key_id, now)
            in_grace = grace_period_s > 0
            row = await repo.rotate_key(
                conn,
                key_id,
                key_hash=apikeys.hash_key(secret),
                hint=apikeys.hint(secret),
                previous_key_hash=row["key_hash"] if in_grace else None,
                previous_valid_until=now + timedelta(seconds=grace_period_s) if in_grace else None,
                now=now,
            )
            await self._publish(conn, row, "key.rotated", now)
        log.info("key rotated", extra={"key_id": key_id, "grace_period_s": grace_period_s})
        return Created(row, secret)

    async def revoke_key(self, project_id: str, key_id: str) -> Row:
        """Revoke the key for good; revoking it again is KeyRevoked."""
        now = utc_now()
        async with self._transaction() as conn:
            await self._project(conn, project_id)
            row = await self._key(conn, project_id, key_id, lock=True)
            if row["status"] == "revoked":
                raise KeyRevoked(key_id)
            row = await repo.revoke_key(conn, key_id, now)
            await self._publish(conn, row, "key.revoked", now)
        log.info("key revoked", extra={"key_id": key_id, "project_id": project_id})
        return row

    async def verify(self, key_hash: str) -> KeyState | None:
        """The state of the key holding key_hash (revoked ones too), or None."""
        async with self._transaction() as conn:
            row = await repo.find_by_hash(conn, key_hash, utc_now())
        return None if row is None else key_state(row)
