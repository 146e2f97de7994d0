"""SQL of admin keys: create, read, list within a caller's sight, rotate, revoke, and the
lookup by hash that every management call with an admin key makes on a cache miss.

Tables are unqualified (the pool's search path is the service's schema). "Within sight" is
what the caller could have granted itself: a scope inside its own (``within``: its project
ids, or None for the organization) and permissions inside its own (``holding``; None: all).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.keys.rows import Row

if TYPE_CHECKING:
    from services.keys.rows import Executor

_COLUMNS = (
    "id, name, hint, key_hash, organization, project_ids, permissions, status, owner,"
    " created_at, updated_at, rotated_at, revoked_at, last_used_at, version"
)
# Visible to a caller whose scope is $within (NULL: organization) holding $holding (NULL: all).
_IN_SIGHT = (
    "(${w}::text[] IS NULL OR (NOT organization AND project_ids <@ ${w}::text[]))"
    " AND (${h}::text[] IS NULL OR permissions <@ ${h}::text[])"
)


def _in_sight(within: int, holding: int) -> str:
    return _IN_SIGHT.replace("${w}", f"${within}").replace("${h}", f"${holding}")


async def insert_admin_key(
    conn: Executor,
    *,
    key_id: str,
    name: str,
    hint: str,
    key_hash: str,
    project_ids: Sequence[str] | None,
    permissions: Sequence[str],
    owner: dict[str, Any],
    now: datetime,
) -> Row:
    """A new active admin key (version 1); project_ids None: the whole organization."""
    row = await conn.fetchrow(
        "INSERT INTO admin_api_keys (id, name, hint, key_hash, organization, project_ids,"
        " permissions, owner, created_at, updated_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $9) RETURNING {_COLUMNS}",
        key_id,
        name,
        hint,
        key_hash,
        project_ids is None,
        list(project_ids or ()),
        list(permissions),
        json.dumps(owner, separators=(",", ":")),
        now,
    )
    assert row is not None
    return row


async def get_admin_key(
    conn: Executor,
    key_id: str,
    within: Sequence[str] | None,
    holding: Sequence[str] | None,
    *,
    lock: bool = False,
) -> Row | None:
    """The admin key, when in the caller's sight; locked for the transaction when asked."""
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM admin_api_keys WHERE id = $1 AND {_in_sight(2, 3)}"
        + (" FOR UPDATE" if lock else ""),
        key_id,
        _array(within),
        _array(holding),
    )


async def list_admin_keys(
    conn: Executor,
    within: Sequence[str] | None,
    holding: Sequence[str] | None,
    *,
    limit: int,
    after: str | None,
) -> list[Row]:
    """Up to limit admin keys in the caller's sight, oldest first, after ``after``."""
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM admin_api_keys WHERE {_in_sight(1, 2)}"
        " AND ($4::text IS NULL OR seq > (SELECT seq FROM admin_api_keys WHERE id = $4))"
        " ORDER BY seq LIMIT $3",
        _array(within),
        _array(holding),
        limit,
        after,
    )


async def rotate_admin_key(
    conn: Executor, key_id: str, key_hash: str, hint: str, now: datetime
) -> Row:
    """A new secret for the admin key; the old one stops at once."""
    return await _update(
        conn, key_id, now, "key_hash = $3, hint = $4, rotated_at = $2", key_hash, hint
    )


async def revoke_admin_key(conn: Executor, key_id: str, now: datetime) -> Row:
    """Revoke the admin key for good."""
    return await _update(conn, key_id, now, "status = 'revoked', revoked_at = $2")


async def _update(conn: Executor, key_id: str, now: datetime, sets: str, *args: object) -> Row:
    row = await conn.fetchrow(
        f"UPDATE admin_api_keys SET {sets}, updated_at = $2, version = version + 1"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        key_id,
        now,
        *args,
    )
    assert row is not None
    return row


async def authenticate(conn: Executor, key_hash: str) -> Row | None:
    """The admin key with this hash (revoked ones too), in one round trip that also moves its
    last_used_at forward when it is a minute old (so a busy key writes once a minute, not
    once per call; the row read is the one before that write)."""
    return await conn.fetchrow(
        "WITH touched AS (UPDATE admin_api_keys SET last_used_at = now()"
        " WHERE key_hash = $1 AND status = 'active'"
        " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') RETURNING id)"
        f" SELECT {_COLUMNS} FROM admin_api_keys WHERE key_hash = $1",
        key_hash,
    )


async def fingerprint(conn: Executor) -> tuple[int, int]:
    """The count of admin keys and the sum of their versions: any change moves it."""
    row = await conn.fetchrow("SELECT count(*), coalesce(sum(version), 0) FROM admin_api_keys")
    assert row is not None
    return int(row[0]), int(row[1])


async def all_admin_keys(conn: Executor) -> list[Row]:
    """Every admin key (revoked ones too), as the followers' states are made of."""
    return list(await conn.fetch(f"SELECT {_COLUMNS} FROM admin_api_keys ORDER BY id"))


async def existing_projects(conn: Executor, project_ids: Sequence[str]) -> set[str]:
    """Those of project_ids that are projects."""
    rows = await conn.fetch("SELECT id FROM projects WHERE id = ANY($1::text[])", list(project_ids))
    return {r["id"] for r in rows}


async def notify_change(conn: Executor, channel: str, key_id: str) -> None:
    """Tell every replica's cache, when the caller's transaction commits, to forget the key."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, key_id)


def _array(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)
