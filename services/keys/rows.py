"""How the key service's rows look in Python: the record type, connections, a key's stored
policy, and the jsonb text the queries take and give.

Apart from the SQL (``repository.py``, ``project_repository.py``) because the service's logic
and its API name these too, without needing a statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
    Executor: TypeAlias = "Conn | asyncpg.Pool[asyncpg.Record]"

Row: TypeAlias = asyncpg.Record


@dataclass(frozen=True)
class KeyPolicy:
    """A key's own policy as stored: jsonb objects and text arrays, None for no limit."""

    rate_limits: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    allowed_models: list[str] | None = None
    allowed_endpoints: list[str] | None = None


@dataclass(frozen=True)
class Created:
    """A key row (API or admin key) and its secret, which exists only in this object and the
    HTTP answer."""

    row: Row
    secret: str


def json_text(policy: dict[str, Any] | None) -> str | None:
    """A policy as the jsonb text parameter the queries take (None stays NULL)."""
    return None if policy is None else json.dumps(policy, separators=(",", ":"))


def json_value(text: str | None) -> Any:
    """A jsonb column as asyncpg returns it (text), decoded."""
    return None if text is None else json.loads(text)
