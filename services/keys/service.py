"""The key service's logic: projects and keys, each change and its event in one transaction
(``transactions.py``: the outbox, and the gateways' Redis after the commit).

Lock order, so that concurrent changes cannot deadlock: the project row first (taken by
whatever may move the project's default, and by a project's policy change), then key rows.
Every change to a key locks its row before writing its outbox message, so per key the outbox
order is the commit order.

Projects' own operations, and how a project's policy reaches its keys, are in ``projects.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from services.keys import repository as repo
from services.keys.admin_keys import AdminKeys
from services.keys.audit import AuditContext
from services.keys.errors import (
    InvalidExpiry,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
)
from services.keys.mirror import StateMirror
from services.keys.policies import (
    KEY_FIELDS,
    check_models,
    key_policy,
    stored,
)
from services.keys.projects import Projects, difference
from services.keys.rows import Created, KeyPolicy, Row
from services.keys.schemas import unix
from shared import apikeys
from shared.events import KeyState, utc_now
from shared.ids import resource_id
from shared.state_mac import Keyring

if TYPE_CHECKING:
    from services.keys.rows import Conn

log = logging.getLogger(__name__)


def view_status(row: Row, now: datetime) -> Literal["active", "expired", "revoked"]:
    """What a user sees: revoked, expired (by its expires_at), or active."""
    if row["status"] == "revoked":
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


def key_fields(row: Row) -> dict[str, Any]:
    """What an audit entry may show of a key: its name, policy, default, expiry, hint."""
    return (
        {"name": row["name"]}
        | vars(key_policy(row))
        | {"is_default": row["is_default"], "expires_at": unix(row["expires_at"])}
    )


class KeyService(Projects, AdminKeys):
    """Projects, keys and admin keys on PostgreSQL, every key change announced through the
    outbox, every change recorded in the audit log."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topic: str,
        channel: str,
        max_grace_s: int,
        models: Collection[str],
        keyring: Keyring,
        audit_topic: str,
        admin_channel: str,
        mirror: StateMirror | None = None,
    ) -> None:
        super().__init__(
            pool,
            topic=topic,
            channel=channel,
            mirror=mirror,
            keyring=keyring,
            audit_topic=audit_topic,
            admin_channel=admin_channel,
        )
        self.models = frozenset(models)  # the catalogue's ids, which allowed_models may name
        self.max_grace_s = max_grace_s

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
        policy: Mapping[str, Any] | None,
        context: AuditContext,
    ) -> Created:
        """A new key with its policy (the fields of KEY_FIELDS that are given, as the API's
        types); the project's first key (when it has no default) becomes its default."""
        now = utc_now()
        if expires_at is not None and expires_at <= now:
            raise InvalidExpiry("'expires_at' must be in the future.", param="expires_at")
        given = stored(policy or {})
        check_models(given.get("allowed_models"), self.models)
        secret = apikeys.generate()
        async with self.transaction() as conn:
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
            await self.publish(conn, row, "key.created", now)
            await self.audit(
                conn,
                context,
                "api_key.created",
                project_id=project_id,
                resource_id=row["id"],
                before=None,
                after=key_fields(row) | {"hint": row["hint"]},
                now=now,
            )
        log.info("key created", extra={"key_id": row["id"], "project_id": project_id})
        return Created(row, secret)

    async def get_key(self, project_id: str, key_id: str) -> Row:
        """The key (revoked ones too), or ProjectNotFound / KeyNotFound."""
        async with self.transaction() as conn:
            await self._project(conn, project_id)
            return await self._key(conn, project_id, key_id)

    async def list_keys(
        self, project_id: str, *, include_revoked: bool, limit: int, after: str | None
    ) -> tuple[list[Row], bool]:
        """A page of the project's keys and whether more follow."""
        async with self.transaction() as conn:
            await self._project(conn, project_id)
            await self._cursor(conn, "api_keys", after)
            rows = await repo.list_keys(
                conn, project_id, include_revoked=include_revoked, limit=limit + 1, after=after
            )
        return rows[:limit], len(rows) > limit

    async def update_key(
        self, project_id: str, key_id: str, changes: Mapping[str, Any], context: AuditContext
    ) -> Row:
        """Change a key's name and policy: the fields in changes (None removes a limit), the
        rest as they are. A key that would not change publishes nothing; a revoked one is
        KeyRevoked."""
        now = utc_now()
        given = stored(changes)
        check_models(given.get("allowed_models"), self.models)
        async with self.transaction() as conn:
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
            await self.publish(conn, row, "key.updated", now)
            before, after = difference(old, new)
            await self.audit(
                conn,
                context,
                "api_key.updated",
                project_id=project_id,
                resource_id=key_id,
                before=before,
                after=after,
                now=now,
            )
        log.info(
            "key updated",
            extra={"key_id": key_id, "project_id": project_id, "fields": sorted(changes)},
        )
        return row

    async def set_default(self, project_id: str, key_id: str, context: AuditContext) -> Row:
        """Make the key the project's default; the old default's new state is published too."""
        now = utc_now()
        async with self.transaction() as conn:
            # The project lock serialises racing calls; the partial unique index backs it up.
            await self._project(conn, project_id, lock=True)
            row = await self._changeable(conn, project_id, key_id, now)
            if row["is_default"]:
                return row
            previous = await repo.clear_default(conn, project_id, now)
            if previous is not None:
                await self.publish(conn, previous, "key.default_changed", now)
            row = await repo.make_default(conn, key_id, now)
            await self.publish(conn, row, "key.default_changed", now)
            await self.audit(
                conn,
                context,
                "api_key.updated",
                project_id=project_id,
                resource_id=key_id,
                before={"is_default": False, "default_key_id": previous and previous["id"]},
                after={"is_default": True, "default_key_id": key_id},
                now=now,
            )
        log.info("default key set", extra={"key_id": key_id, "project_id": project_id})
        return row

    async def rotate_key(
        self, project_id: str, key_id: str, grace_period_s: int, context: AuditContext
    ) -> Created:
        """A new secret for the key; the old one keeps working for grace_period_s seconds."""
        if grace_period_s > self.max_grace_s:
            raise InvalidExpiry(
                f"'grace_period_seconds' must be at most {self.max_grace_s}.",
                param="grace_period_seconds",
                code="invalid_grace_period",
            )
        now = utc_now()
        secret = apikeys.generate()
        async with self.transaction() as conn:
            await self._project(conn, project_id)
            row = await self._changeable(conn, project_id, key_id, now)
            in_grace = grace_period_s > 0
            before = {
                "hint": row["hint"],
                "previous_key_valid_until": unix(row["previous_valid_until"]),
            }
            row = await repo.rotate_key(
                conn,
                key_id,
                key_hash=apikeys.hash_key(secret),
                hint=apikeys.hint(secret),
                previous_key_hash=row["key_hash"] if in_grace else None,
                previous_valid_until=now + timedelta(seconds=grace_period_s) if in_grace else None,
                now=now,
            )
            await self.publish(conn, row, "key.rotated", now)
            await self.audit(
                conn,
                context,
                "api_key.rotated",
                project_id=project_id,
                resource_id=key_id,
                before=before,
                after={
                    "hint": row["hint"],
                    "previous_key_valid_until": unix(row["previous_valid_until"]),
                },
                now=now,
            )
        log.info("key rotated", extra={"key_id": key_id, "grace_period_s": grace_period_s})
        return Created(row, secret)

    async def revoke_key(self, project_id: str, key_id: str, context: AuditContext) -> Row:
        """Revoke the key for good; revoking it again is KeyRevoked."""
        now = utc_now()
        async with self.transaction() as conn:
            await self._project(conn, project_id)
            row = await self._key(conn, project_id, key_id, lock=True)
            if row["status"] == "revoked":
                raise KeyRevoked(key_id)
            was_default = row["is_default"]
            row = await repo.revoke_key(conn, key_id, now)
            await self.publish(conn, row, "key.revoked", now)
            await self.audit(
                conn,
                context,
                "api_key.deleted",
                project_id=project_id,
                resource_id=key_id,
                before={"status": "active", "is_default": was_default},
                after={"status": "revoked", "is_default": False},
                now=now,
            )
        log.info("key revoked", extra={"key_id": key_id, "project_id": project_id})
        return row

    async def verify(self, key_hash: str) -> KeyState | None:
        """The state of the key holding key_hash (revoked ones too), or None."""
        async with self.transaction() as conn:
            row = await repo.find_by_hash(conn, key_hash, utc_now())
        return None if row is None else self.state_of(row)
