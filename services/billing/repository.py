"""Billing's SQL: add batch costs to the day ledger, sum it into buckets, read spend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from services.billing.service import CostKey
from shared.exactly_once import bucket_params
from shared.exactly_once.store import columns
from shared.usage_query import UsageQuery

if TYPE_CHECKING:
    from shared.exactly_once import Conn

_ADD = """
INSERT INTO cost_day AS c (project_id, day, key_id, model, line_item, tokens, amount)
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],
    $6::bigint[], $7::numeric[])
ON CONFLICT (project_id, day, key_id, model, line_item) DO UPDATE SET
    tokens = c.tokens + EXCLUDED.tokens,
    amount = c.amount + EXCLUDED.amount
"""


async def add_costs(conn: Conn, deltas: dict[CostKey, tuple[int, Decimal]]) -> None:
    """Add each delta to its ledger row, in key order so concurrent writers never deadlock."""
    if not deltas:
        return
    await conn.execute(_ADD, *columns([(*k, *deltas[k]) for k in sorted(deltas)]))


async def sum_buckets(
    conn: Conn | asyncpg.Pool, project_id: str, query: UsageQuery
) -> Sequence[asyncpg.Record]:
    """The ledger summed per day bucket (and per key, model, line item when grouped)."""
    by_line = "line_item" in query.group_by
    key_col = "key_id" if "api_key_id" in query.group_by else "NULL::text"
    # A line item is named after its model ("m, input"), so grouping by it groups by model.
    model_col = "model" if by_line or "model" in query.group_by else "NULL::text"
    line_col = "line_item" if by_line else "NULL::text"
    sql = f"""
        SELECT date_bin($4::interval, day::timestamp AT TIME ZONE 'UTC',
                        TIMESTAMPTZ 'epoch') AS bucket,
               {key_col} AS key_id, {model_col} AS model, {line_col} AS line_item,
               sum(amount) AS amount, sum(tokens)::bigint AS tokens
        FROM cost_day
        WHERE project_id = $1 AND day >= ($2::timestamptz AT TIME ZONE 'UTC')::date
          AND (day::timestamp AT TIME ZONE 'UTC') < $3
          AND ($5::text[] IS NULL OR key_id = ANY($5::text[]))
          AND ($6::text[] IS NULL OR model = ANY($6::text[]))
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST, 4 NULLS FIRST
    """
    return await conn.fetch(sql, project_id, *bucket_params(query, 86400))


async def total(conn: Conn | asyncpg.Pool, project_id: str, query: UsageQuery) -> Decimal:
    """The exact total cost of the project's days from start_time's day until end_time."""
    start = query.start_time // 86400 * 86400
    amount = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM cost_day WHERE project_id = $1"
        " AND day >= (to_timestamp($2) AT TIME ZONE 'UTC')::date"
        " AND (day::timestamp AT TIME ZONE 'UTC') < to_timestamp($3)"
        " AND ($4::text[] IS NULL OR key_id = ANY($4::text[]))"
        " AND ($5::text[] IS NULL OR model = ANY($5::text[]))",
        project_id,
        start,
        query.end_time,
        list(query.api_key_ids) or None,
        list(query.models) or None,
    )
    assert isinstance(amount, Decimal)
    return amount


# ROLLUP adds the project's total (key_id NULL) to the per-key sums in the same scan, and
# PostgreSQL sums numeric exactly. The primary key (project_id, day, ...) serves the range.
_SPEND = """
SELECT key_id, GROUPING(key_id) = 1 AS is_total, coalesce(sum(amount), 0) AS amount
FROM cost_day WHERE project_id = $1 AND day >= $2
GROUP BY ROLLUP (key_id)
"""


async def spend_since(
    conn: Conn | asyncpg.Pool, project_id: str, since: date
) -> tuple[Decimal, dict[str, Decimal]]:
    """The project's exact spend from the UTC day since on, in total and per key."""
    total = Decimal(0)
    per_key: dict[str, Decimal] = {}
    for row in await conn.fetch(_SPEND, project_id, since):
        if row["is_total"]:
            total = row["amount"]
        else:
            per_key[row["key_id"]] = row["amount"]
    return total, per_key
