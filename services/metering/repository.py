"""Metering's SQL: add batch deltas to the minute ledger, and sum it into buckets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from services.metering.service import MinuteDelta, MinuteKey
from shared.exactly_once import bucket_params
from shared.exactly_once.store import columns
from shared.usage_query import UsageQuery

if TYPE_CHECKING:
    from shared.exactly_once import Conn

_ADD = """
INSERT INTO usage_minute AS u (project_id, minute, key_id, model, requests, input_tokens,
    cached_input_tokens, output_tokens, errors)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[],
    $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
ON CONFLICT (project_id, minute, key_id, model) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = u.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    errors = u.errors + EXCLUDED.errors
"""


async def add_minutes(conn: Conn, deltas: dict[MinuteKey, MinuteDelta]) -> None:
    """Add each delta to its ledger row, in key order so concurrent writers never deadlock."""
    if not deltas:
        return
    rows = [
        (*k, d.requests, d.input_tokens, d.cached_input_tokens, d.output_tokens, d.errors)
        for k, d in sorted(deltas.items())
    ]
    await conn.execute(_ADD, *columns(rows))


async def sum_buckets(
    conn: Conn | asyncpg.Pool, project_id: str, query: UsageQuery
) -> Sequence[asyncpg.Record]:
    """The ledger summed per bucket (and per key and model when grouped by them)."""
    key_col = "key_id" if "api_key_id" in query.group_by else "NULL::text"
    model_col = "model" if "model" in query.group_by else "NULL::text"
    sql = f"""
        SELECT date_bin($4::interval, minute, TIMESTAMPTZ 'epoch') AS bucket,
               {key_col} AS key_id, {model_col} AS model,
               sum(requests)::bigint AS requests, sum(input_tokens)::bigint AS input_tokens,
               sum(cached_input_tokens)::bigint AS cached_input_tokens,
               sum(output_tokens)::bigint AS output_tokens, sum(errors)::bigint AS errors
        FROM usage_minute
        WHERE project_id = $1 AND minute >= $2 AND minute < $3
          AND ($5::text[] IS NULL OR key_id = ANY($5::text[]))
          AND ($6::text[] IS NULL OR model = ANY($6::text[]))
        GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST
    """
    return await conn.fetch(sql, project_id, *bucket_params(query, 60))
