"""Metering's SQL: add batch deltas to the usage ledger, and sum it into buckets.

The ledger is three tables of the same shape, one row per project, time, key and model:
``usage_minute``, ``usage_hour`` and ``usage_day`` (UTC-aligned), each batch's deltas added
to all three in its transaction. A page's sum reads each stretch of its window from the
coarsest table that fits it whole and is not coarser than its buckets (``segments``): a month
of 1d buckets is about 30 day rows per key and model, plus the minutes and hours of its
unaligned edges, and the answer is the same as summing minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from services.metering.service import LEDGER_GRAINS, MinuteDelta, MinuteKey, rolled_up
from shared.exactly_once import bucket_params
from shared.exactly_once.store import columns
from shared.usage_query import UsageQuery

if TYPE_CHECKING:
    from shared.exactly_once import Conn

# Each grain's table and time column (seconds: name).
TABLES = {60: ("usage_minute", "minute"), 3600: ("usage_hour", "hour"), 86400: ("usage_day", "day")}


def _add_sql(table: str, column: str) -> str:
    return f"""
INSERT INTO {table} AS u (project_id, {column}, key_id, model, requests, input_tokens,
    cached_input_tokens, output_tokens, errors)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[],
    $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
ON CONFLICT (project_id, {column}, key_id, model) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = u.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    errors = u.errors + EXCLUDED.errors
"""


_ADD = {grain: _add_sql(*TABLES[grain]) for grain in LEDGER_GRAINS}


async def add_usage(
    conn: Conn, deltas: dict[MinuteKey, MinuteDelta], minutes_from: datetime | None = None
) -> None:
    """Add the minute deltas to the minute, hour and day rows, each table in key order so
    concurrent writers never deadlock; minutes before ``minutes_from`` (past the minute rows'
    retention) to the hours and days only."""
    if not deltas:
        return
    for grain in LEDGER_GRAINS:
        if grain == 60:
            grained = deltas
            if minutes_from is not None:
                grained = {k: d for k, d in deltas.items() if k[1] >= minutes_from}
        else:
            grained = rolled_up(deltas, grain)
        if not grained:
            continue
        rows = [
            (*k, d.requests, d.input_tokens, d.cached_input_tokens, d.output_tokens, d.errors)
            for k, d in sorted(grained.items())
        ]
        await conn.execute(_ADD[grain], *columns(rows))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The window's stretches, in the order of the query's slots: minute, hour, day, hour, minute.
_SLOTS = (60, 3600, 86400, 3600, 60)


def segments(start: datetime, until: datetime, width: int) -> list[tuple[datetime, datetime]]:
    """The window [start, until) cut into five stretches, one per slot of ``_SLOTS``: minutes
    up to the first whole hour, hours up to the first whole day, the whole days, hours, then
    minutes to the end; only grains no coarser than ``width`` are used (an empty stretch is
    (epoch, epoch)). Each moment of the window is in exactly one stretch."""
    slots = [(_EPOCH, _EPOCH)] * len(_SLOTS)
    _cut_window(start, until, [g for g in LEDGER_GRAINS if g <= width], slots)
    return slots


def _cut_window(
    start: datetime, until: datetime, grains: list[int], slots: list[tuple[datetime, datetime]]
) -> None:
    """Fill ``slots`` (see ``segments``) for the grains allowed."""
    if start >= until:
        return
    if grains == [60]:
        slots[0] = (start, until)
        return
    coarse = grains[-1]
    step = timedelta(seconds=coarse)
    first = _EPOCH + -(-(start - _EPOCH) // step) * step
    last = _EPOCH + ((until - _EPOCH) // step) * step
    if first >= last:  # no whole unit of the coarse grain: the finer ones read it all
        _cut_window(start, until, grains[:-1], slots)
        return
    if coarse == 86400:
        slots[2] = (first, last)
        _left(start, first, slots)
        _right(last, until, slots)
    else:  # hours in the middle (1h buckets, or a 1d window with no whole day)
        slots[1] = (first, last)
        slots[0] = (start, first) if start < first else slots[0]
        slots[4] = (last, until) if last < until else slots[4]


def _left(start: datetime, first_day: datetime, slots: list[tuple[datetime, datetime]]) -> None:
    """Before the first whole day: minutes up to the first whole hour, then hours."""
    hour = timedelta(hours=1)
    first_hour = min(_EPOCH + -(-(start - _EPOCH) // hour) * hour, first_day)
    if start < first_hour:
        slots[0] = (start, first_hour)
    if first_hour < first_day:
        slots[1] = (first_hour, first_day)


def _right(last_day: datetime, until: datetime, slots: list[tuple[datetime, datetime]]) -> None:
    """After the last whole day: hours up to the last whole hour, then minutes."""
    hour = timedelta(hours=1)
    last_hour = max(_EPOCH + ((until - _EPOCH) // hour) * hour, last_day)
    if last_day < last_hour:
        slots[3] = (last_day, last_hour)
    if last_hour < until:
        slots[4] = (last_hour, until)


def _stretch(slot: int) -> str:
    table, column = TABLES[_SLOTS[slot]]
    first, last = 5 + 2 * slot, 6 + 2 * slot
    return (
        f"SELECT {column} AS t, key_id, model, requests, input_tokens, cached_input_tokens,"
        f" output_tokens, errors FROM {table} WHERE project_id = $1"
        f" AND {column} >= ${first} AND {column} < ${last}"
        " AND ($3::text[] IS NULL OR key_id = ANY($3::text[]))"
        " AND ($4::text[] IS NULL OR model = ANY($4::text[]))"
    )


_ROWS = "\n  UNION ALL\n  ".join(_stretch(slot) for slot in range(len(_SLOTS)))


async def sum_buckets(
    conn: Conn | asyncpg.Pool, project_id: str, query: UsageQuery
) -> Sequence[asyncpg.Record]:
    """The ledger summed per bucket (and per key and model when grouped by them)."""
    # Sorted bytewise ("C"): the ids are ASCII, and a locale's comparisons cost a third of
    # a month's page grouped by key.
    key_col = 'key_id COLLATE "C"' if "api_key_id" in query.group_by else "NULL::text"
    model_col = 'model COLLATE "C"' if "model" in query.group_by else "NULL::text"
    sql = f"""
        SELECT date_bin($2::interval, t, TIMESTAMPTZ 'epoch') AS bucket,
               {key_col} AS key_id, {model_col} AS model,
               sum(requests)::bigint AS requests, sum(input_tokens)::bigint AS input_tokens,
               sum(cached_input_tokens)::bigint AS cached_input_tokens,
               sum(output_tokens)::bigint AS output_tokens, sum(errors)::bigint AS errors
        FROM (
          {_ROWS}
        ) AS rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST
    """
    start, until, width, keys, models = bucket_params(query, 60)
    stretches = segments(start, until, query.width)
    bounds = [moment for stretch in stretches for moment in stretch]
    return await conn.fetch(sql, project_id, width, keys, models, *bounds)
