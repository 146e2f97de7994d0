"""Projects: create, read, list, and change one (its name and policy).

Apart from the keys' operations (``service.py``, whose ``KeyService`` builds on this class)
because a project is its own row with its own SQL (``project_repository.py``). What ties the
two is here: every key state carries its project's policy (``project_rate_limits``,
``project_budget``), read by the statement that writes the key row. A project policy change
locks the project, writes it, then bumps every non-revoked key of the project in the same
transaction: a key change racing it either committed first (the project change then writes a
newer version over it) or waits for the key row lock, and the statement after that wait sees
the new policy. So a key's newest version always carries its project's newest policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from services.keys import project_repository as projects
from services.keys import repository as repo
from services.keys.audit import AuditContext
from services.keys.errors import ProjectNotFound
from services.keys.policies import PROJECT_FIELDS, stored
from services.keys.rows import Row, json_value
from services.keys.transactions import Transactions
from shared.errors import BadRequest
from shared.events import utc_now
from shared.ids import resource_id

if TYPE_CHECKING:
    from services.keys.rows import Conn

log = logging.getLogger("services.keys.service")  # one logger for the key service's changes


def difference(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields that differ, as they were and as they are (an audit entry's changes)."""
    changed = [f for f in new if old.get(f) != new[f]]
    return {f: old.get(f) for f in changed}, {f: new[f] for f in changed}


class Projects(Transactions):
    """A project's operations, each in one transaction."""

    async def create_project(self, name: str, context: AuditContext) -> Row:
        """A new project."""
        now = utc_now()
        async with self.transaction() as conn:
            row = await projects.insert_project(conn, resource_id("proj"), name, now)
            await self.audit(
                conn,
                context,
                "project.created",
                project_id=row["id"],
                resource_id=row["id"],
                before=None,
                after={"name": name},
                now=now,
            )
        return row

    async def get_project(self, project_id: str) -> Row:
        """The project, or ProjectNotFound."""
        async with self.transaction() as conn:
            return await self._project(conn, project_id)

    async def update_project(
        self, project_id: str, changes: Mapping[str, Any], context: AuditContext
    ) -> Row:
        """Change the project's name and policy (fields not in changes stay as they are).

        A policy change re-publishes every non-revoked key of the project (``key.updated``, a
        new version each) in the same transaction: that is how it reaches the gateways.
        """
        now = utc_now()
        async with self.transaction() as conn:
            row = await self._project(conn, project_id, lock=True)
            old = {"name": row["name"]} | {f: json_value(row[f]) for f in PROJECT_FIELDS}
            new = old | stored(changes)
            if new == old:
                return row
            row = await projects.update_project(
                conn,
                project_id,
                name=new["name"],
                rate_limits=new["rate_limits"],
                budget=new["budget"],
                now=now,
            )
            before, after = difference(old, new)
            await self.audit(
                conn,
                context,
                "project.updated",
                project_id=project_id,
                resource_id=project_id,
                before=before,
                after=after,
                now=now,
            )
            republished = 0
            if any(new[f] != old[f] for f in PROJECT_FIELDS):
                for key in await repo.touch_project_keys(conn, project_id, now):
                    await self.publish(conn, key, "key.updated", now)
                    republished += 1
        log.info(
            "project updated", extra={"project_id": project_id, "keys_republished": republished}
        )
        return row

    async def list_projects(
        self, limit: int, after: str | None, within: list[str] | None = None
    ) -> tuple[list[Row], bool]:
        """A page of projects (those in within, when given) and whether more follow."""
        async with self.transaction() as conn:
            await self._cursor(conn, "projects", after, within)
            rows = await projects.list_projects(conn, limit + 1, after, within)
        return rows[:limit], len(rows) > limit

    async def _cursor(
        self, conn: Conn, table: str, after: str | None, within: list[str] | None = None
    ) -> None:
        # A project outside the caller's scope is as unknown here as one that does not exist.
        if after is not None and (
            not await repo.exists(conn, table, after)
            or (within is not None and after not in within)
        ):
            raise BadRequest(f"Invalid 'after': no item has the id '{after}'.", param="after")

    async def _project(self, conn: Conn, project_id: str, *, lock: bool = False) -> Row:
        row = await projects.get_project(conn, project_id, lock=lock)
        if row is None:
            raise ProjectNotFound(project_id)
        return row
