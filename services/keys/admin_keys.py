"""Admin keys: create (secret shown once), list, get, rotate, revoke; each change audited and
NOTIFYed to every replica's cache (``admin_key_cache.py``) in its own transaction.

Least privilege: a caller grants only what it holds. An admin key creating another may give
only permissions it holds (403 naming the first it lacks) and a scope inside its own: a project
outside it is refused exactly as a project that does not exist (400 on ``scope.project_ids``),
and organization scope only by an organization-scoped caller. It sees, rotates and revokes only
the admin keys it could have created (the rest are 404): rotating one hands out its secret, so
anything else would let a key obtain rights it was never given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from services.keys import admin_key_repository as repo
from services.keys.admin_key_cache import NEW_KEY
from services.keys.audit import AuditContext
from services.keys.errors import AdminKeyNotFound, AdminKeyRevoked
from services.keys.rows import Created, Row
from services.keys.transactions import Transactions
from shared import apikeys
from shared.access import Principal
from shared.errors import BadRequest, InsufficientPermissions
from shared.events import utc_now
from shared.ids import resource_id

if TYPE_CHECKING:
    from services.keys.rows import Conn

log = logging.getLogger("services.keys.service")  # one logger for the key service's changes


def admin_key_fields(row: Row) -> dict[str, Any]:
    """What an audit entry may show of an admin key: name, hint, scope, permissions."""
    return {
        "name": row["name"],
        "hint": row["hint"],
        "scope": scope_of(row),
        "permissions": list(row["permissions"]),
    }


def scope_of(row: Row) -> dict[str, Any]:
    """An admin key's scope as the API shows it."""
    if row["organization"]:
        return {"organization": True}
    return {"project_ids": list(row["project_ids"])}


class AdminKeys(Transactions):
    """Admin keys' operations, each in one transaction with its audit entry."""

    async def create_admin_key(
        self,
        caller: Principal,
        context: AuditContext,
        *,
        name: str,
        project_ids: Sequence[str] | None,
        permissions: Sequence[str],
    ) -> Created:
        """A new admin key; project_ids None: organization scope. Its secret is in the answer
        only."""
        lacking = next((p for p in permissions if p not in caller.permissions), None)
        if lacking is not None:
            raise InsufficientPermissions(
                lacking,
                f"This admin key lacks the permission '{lacking}', so it cannot grant it.",
            )
        if project_ids is None and not caller.organization:
            raise InsufficientPermissions(
                "organization scope",
                "This admin key is scoped to projects: it cannot grant organization scope.",
            )
        now = utc_now()
        secret = apikeys.generate_admin()
        async with self.transaction() as conn:
            if project_ids is not None:
                existing = await repo.existing_projects(conn, project_ids)
                for project_id in project_ids:
                    # Out of the caller's scope reads exactly as a project that does not exist.
                    if project_id not in existing or not caller.sees(project_id):
                        raise BadRequest(
                            f"No project found with id '{project_id}'.",
                            param="scope.project_ids",
                        )
            row = await repo.insert_admin_key(
                conn,
                key_id=resource_id("admkey"),
                name=name,
                hint=apikeys.hint(secret),
                key_hash=apikeys.hash_key(secret),
                project_ids=project_ids,
                permissions=permissions,
                owner=caller.actor.model_dump(),
                now=now,
            )
            # Every replica's stream of states passes it on at once (admin_key_stream.py); no
            # cache holds a key that did not exist, so none drops anything (NEW_KEY).
            await repo.notify_change(conn, self.admin_channel, NEW_KEY + row["id"])
            await self.audit(
                conn,
                context,
                "admin_api_key.created",
                project_id=None,
                resource_id=row["id"],
                before=None,
                after=admin_key_fields(row),
                now=now,
            )
        log.info("admin key created", extra={"admin_key_id": row["id"]})
        return Created(row, secret)

    async def list_admin_keys(
        self, caller: Principal, limit: int, after: str | None
    ) -> tuple[list[Row], bool]:
        """A page of the admin keys in the caller's sight, oldest first."""
        async with self.transaction() as conn:
            if after is not None and (
                await repo.get_admin_key(conn, after, caller.within, caller.holding) is None
            ):
                raise BadRequest(f"Invalid 'after': no item has the id '{after}'.", param="after")
            rows = await repo.list_admin_keys(
                conn, caller.within, caller.holding, limit=limit + 1, after=after
            )
        return rows[:limit], len(rows) > limit

    async def get_admin_key(self, caller: Principal, key_id: str) -> Row:
        """The admin key, when in the caller's sight; AdminKeyNotFound otherwise."""
        async with self.transaction() as conn:
            row = await repo.get_admin_key(conn, key_id, caller.within, caller.holding)
        if row is None:
            raise AdminKeyNotFound(key_id)
        return row

    async def rotate_admin_key(
        self, caller: Principal, context: AuditContext, key_id: str
    ) -> Created:
        """A new secret for the admin key; the old one is refused at once, everywhere."""
        now = utc_now()
        secret = apikeys.generate_admin()
        async with self.transaction() as conn:
            old = await self._changeable_admin_key(conn, caller, key_id)
            row = await repo.rotate_admin_key(
                conn, key_id, apikeys.hash_key(secret), apikeys.hint(secret), now
            )
            await repo.notify_change(conn, self.admin_channel, key_id)
            await self.audit(
                conn,
                context,
                "admin_api_key.rotated",
                project_id=None,
                resource_id=key_id,
                before={"hint": old["hint"]},
                after={"hint": row["hint"]},
                now=now,
            )
        log.info("admin key rotated", extra={"admin_key_id": key_id})
        return Created(row, secret)

    async def revoke_admin_key(self, caller: Principal, context: AuditContext, key_id: str) -> Row:
        """Revoke the admin key for good; every replica refuses it within a second."""
        now = utc_now()
        async with self.transaction() as conn:
            await self._changeable_admin_key(conn, caller, key_id)
            row = await repo.revoke_admin_key(conn, key_id, now)
            await repo.notify_change(conn, self.admin_channel, key_id)
            await self.audit(
                conn,
                context,
                "admin_api_key.deleted",
                project_id=None,
                resource_id=key_id,
                before={"status": "active"},
                after={"status": "revoked"},
                now=now,
            )
        log.info("admin key revoked", extra={"admin_key_id": key_id})
        return row

    async def _changeable_admin_key(self, conn: Conn, caller: Principal, key_id: str) -> Row:
        row = await repo.get_admin_key(conn, key_id, caller.within, caller.holding, lock=True)
        if row is None:
            raise AdminKeyNotFound(key_id)
        if row["status"] == "revoked":
            raise AdminKeyRevoked(key_id)
        return row
