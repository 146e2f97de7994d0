"""SQL of the projects table: a project's row, its name and its policy.

Apart from ``repository.py`` (keys, outbox, last use) because no statement here touches a key:
bumping a project's keys after its policy changed writes key rows and stays there. Tables are
unqualified (the pool's search path is the service's schema); policies are jsonb objects
written by ``json_text``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.keys.rows import Row, json_text

if TYPE_CHECKING:
    from services.keys.rows import Executor

_PROJECT_COLUMNS = "id, name, created_at, updated_at, rate_limits, budget"


async def insert_project(conn: Executor, project_id: str, name: str, now: datetime) -> Row:
    """A new project."""
    row = await conn.fetchrow(
        "INSERT INTO projects (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)"
        f" RETURNING {_PROJECT_COLUMNS}",
        project_id,
        name,
        now,
    )
    assert row is not None
    return row


async def get_project(conn: Executor, project_id: str, *, lock: bool = False) -> Row | None:
    """The project, locked for the transaction when asked (serialises its default changes)."""
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = $1" + suffix, project_id
    )


async def list_projects(
    conn: Executor, limit: int, after: str | None, within: list[str] | None = None
) -> list[Row]:
    """Up to limit projects in creation order, after the project ``after`` when given, only
    those in ``within`` when given (an admin key's scope)."""
    return await conn.fetch(
        f"SELECT {_PROJECT_COLUMNS} FROM projects"
        " WHERE ($2::text IS NULL OR seq > (SELECT seq FROM projects WHERE id = $2))"
        " AND ($3::text[] IS NULL OR id = ANY($3::text[]))"
        " ORDER BY seq LIMIT $1",
        limit,
        after,
        within,
    )


async def update_project(
    conn: Executor,
    project_id: str,
    *,
    name: str,
    rate_limits: dict[str, Any] | None,
    budget: dict[str, Any] | None,
    now: datetime,
) -> Row:
    """Set the project's name and policy (the caller holds its row lock)."""
    row = await conn.fetchrow(
        "UPDATE projects SET name = $2, rate_limits = $3::jsonb, budget = $4::jsonb,"
        f" updated_at = $5 WHERE id = $1 RETURNING {_PROJECT_COLUMNS}",
        project_id,
        name,
        json_text(rate_limits),
        json_text(budget),
        now,
    )
    assert row is not None
    return row
