"""SQL of the key service's keys, outbox and last use. Every write that changes a key returns
the whole new row. The projects table's own statements are ``project_repository.py``'s.

Tables are unqualified: the pool's search path is the service's schema. Every key row comes
with its project's policy (``project_rate_limits``, ``project_budget``), read in the same
statement: each key state carries it (README.md: "Key policies"). Policies are jsonb objects in
the shape of ``shared.policy`` (``rows.json_text`` writes them); scopes are text arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from services.keys.rows import KeyPolicy, Row, json_text

if TYPE_CHECKING:
    from services.keys.rows import Executor


# Split at spaces, as one string: the list form takes a line per name.
_KEY_NAMES = (  # noqa: SIM905
    "id project_id name hint key_hash previous_key_hash previous_valid_until status"
    " is_default expires_at created_at updated_at rotated_at revoked_at last_used_at"
    " version rate_limits budget allowed_models allowed_endpoints"
).split()
# A key row with its project's policy, from "k" (api_keys or a CTE of changed rows) join "p".
_KEY_SELECT = (
    ", ".join(f"k.{c}" for c in _KEY_NAMES)
    + ", p.rate_limits AS project_rate_limits, p.budget AS project_budget"
)


def _key_rows(write: str) -> str:
    """A statement that writes key rows (RETURNING *) and answers them with their project."""
    return (
        f"WITH k AS ({write} RETURNING *) SELECT {_KEY_SELECT}"
        " FROM k JOIN projects AS p ON p.id = k.project_id"
    )


_KEY_FROM = f"SELECT {_KEY_SELECT} FROM api_keys AS k JOIN projects AS p ON p.id = k.project_id"


async def touch_project_keys(conn: Executor, project_id: str, now: datetime) -> list[Row]:
    """Bump every non-revoked key of the project, so each carries its project's new policy.

    The caller locked the project row first (the lock order); the rows come back with the
    policy this transaction just wrote.
    """
    return await conn.fetch(
        _key_rows(
            "UPDATE api_keys SET updated_at = $2, version = version + 1"
            " WHERE project_id = $1 AND status <> 'revoked'"
        )
        + " ORDER BY k.seq",
        project_id,
        now,
    )


async def exists(conn: Executor, table: str, row_id: str) -> bool:
    """True when the table (projects or api_keys) has a row with that id."""
    assert table in ("projects", "api_keys")
    return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)", row_id))


async def insert_key(
    conn: Executor,
    *,
    key_id: str,
    project_id: str,
    name: str,
    hint: str,
    key_hash: str,
    is_default: bool,
    expires_at: datetime | None,
    policy: KeyPolicy,
    now: datetime,
) -> Row:
    """A new active key (version 1)."""
    row = await conn.fetchrow(
        _key_rows(
            "INSERT INTO api_keys (id, project_id, name, hint, key_hash, is_default, expires_at,"
            " created_at, updated_at, rate_limits, budget, allowed_models, allowed_endpoints)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9::jsonb, $10::jsonb, $11, $12)"
        ),
        key_id,
        project_id,
        name,
        hint,
        key_hash,
        is_default,
        expires_at,
        now,
        json_text(policy.rate_limits),
        json_text(policy.budget),
        policy.allowed_models,
        policy.allowed_endpoints,
    )
    assert row is not None
    return row


async def has_default(conn: Executor, project_id: str) -> bool:
    """True when the project has a default key."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE project_id = $1 AND is_default)", project_id
    )
    return bool(found)


async def get_key(
    conn: Executor, project_id: str, key_id: str, *, lock: bool = False
) -> Row | None:
    """The key of that project, locked for the transaction when asked."""
    suffix = " FOR UPDATE OF k" if lock else ""  # the key row only: never the project's
    return await conn.fetchrow(
        f"{_KEY_FROM} WHERE k.project_id = $1 AND k.id = $2" + suffix,
        project_id,
        key_id,
    )


async def list_keys(
    conn: Executor, project_id: str, *, include_revoked: bool, limit: int, after: str | None
) -> list[Row]:
    """Up to limit keys of the project in creation order, after the key ``after`` when given."""
    return await conn.fetch(
        f"{_KEY_FROM} WHERE k.project_id = $1"
        " AND ($2 OR k.status <> 'revoked')"
        " AND ($4::text IS NULL OR k.seq > (SELECT seq FROM api_keys WHERE id = $4))"
        " ORDER BY k.seq LIMIT $3",
        project_id,
        include_revoked,
        limit,
        after,
    )


async def update_key(
    conn: Executor, key_id: str, name: str, policy: KeyPolicy, now: datetime
) -> Row:
    """Set the key's name and its whole policy."""
    return await _update(
        conn,
        key_id,
        now,
        "name = $3, rate_limits = $4::jsonb, budget = $5::jsonb, allowed_models = $6,"
        " allowed_endpoints = $7",
        name,
        json_text(policy.rate_limits),
        json_text(policy.budget),
        policy.allowed_models,
        policy.allowed_endpoints,
    )


async def clear_default(conn: Executor, project_id: str, now: datetime) -> Row | None:
    """Unset the project's default key; the old default's new row, or None when there was none."""
    return await conn.fetchrow(
        _key_rows(
            "UPDATE api_keys SET is_default = false, updated_at = $2, version = version + 1"
            " WHERE project_id = $1 AND is_default"
        ),
        project_id,
        now,
    )


async def make_default(conn: Executor, key_id: str, now: datetime) -> Row:
    """Make the key its project's default (the caller cleared the old one)."""
    return await _update(conn, key_id, now, "is_default = true")


async def rotate_key(
    conn: Executor,
    key_id: str,
    *,
    key_hash: str,
    hint: str,
    previous_key_hash: str | None,
    previous_valid_until: datetime | None,
    now: datetime,
) -> Row:
    """Give the key a new secret; the old one lasts until previous_valid_until (or not at all)."""
    return await _update(
        conn,
        key_id,
        now,
        "key_hash = $3, hint = $4, previous_key_hash = $5, previous_valid_until = $6,"
        " rotated_at = $2",
        key_hash,
        hint,
        previous_key_hash,
        previous_valid_until,
    )


async def revoke_key(conn: Executor, key_id: str, now: datetime) -> Row:
    """Revoke the key for good: no default, no grace for an old secret."""
    return await _update(
        conn,
        key_id,
        now,
        "status = 'revoked', is_default = false, revoked_at = $2,"
        " previous_key_hash = NULL, previous_valid_until = NULL",
    )


async def _update(conn: Executor, key_id: str, now: datetime, sets: str, *args: object) -> Row:
    row = await conn.fetchrow(
        _key_rows(
            f"UPDATE api_keys SET {sets}, updated_at = $2, version = version + 1 WHERE id = $1"
        ),
        key_id,
        now,
        *args,
    )
    assert row is not None
    return row


async def find_by_hash(conn: Executor, key_hash: str, now: datetime) -> Row | None:
    """The key whose secret, or whose old secret still in its grace period, has this hash."""
    return await conn.fetchrow(
        f"{_KEY_FROM} WHERE k.key_hash = $1"
        f" UNION ALL {_KEY_FROM}"
        " WHERE k.previous_key_hash = $1 AND k.previous_valid_until > $2 LIMIT 1",
        key_hash,
        now,
    )


async def enqueue(conn: Executor, topic: str, message_key: str, payload: bytes) -> None:
    """Add one message to the outbox (inside the caller's transaction)."""
    await conn.execute(
        "INSERT INTO outbox (topic, message_key, payload) VALUES ($1, $2, $3)",
        topic,
        message_key,
        payload,
    )


async def notify(conn: Executor, channel: str) -> None:
    """Wake the relay when the caller's transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


async def outbox_batch(conn: Executor, limit: int) -> list[Row]:
    """The oldest unpublished messages, in the order they were written."""
    return await conn.fetch(
        "SELECT id, topic, message_key, payload FROM outbox ORDER BY id LIMIT $1", limit
    )


async def delete_outbox(conn: Executor, ids: Sequence[int]) -> None:
    """Forget messages the broker has acknowledged."""
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))


async def outbox_backlog(conn: Executor) -> int:
    """How many messages wait for the relay."""
    return int(await conn.fetchval("SELECT count(*) FROM outbox"))


async def touch_last_used(
    conn: Executor, key_ids: Sequence[str], used_at: Sequence[datetime]
) -> int:
    """Move last_used_at forward (never back, never past now) for each key; rows updated."""
    result = await conn.execute(
        "UPDATE api_keys AS k SET last_used_at = LEAST(v.used_at, now())"
        " FROM unnest($1::text[], $2::timestamptz[]) AS v(id, used_at)"
        " WHERE k.id = v.id"
        " AND (k.last_used_at IS NULL OR k.last_used_at < LEAST(v.used_at, now()))",
        list(key_ids),
        list(used_at),
    )
    return int(result.split()[-1])
