"""The page of buckets the Usage and Costs APIs answer (OpenAI's organization usage shape).

Every bucket of the query's page is listed, in order, empty ones with ``results: []``; a
service turns each of its summed rows into one result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.usage_query import UsageQuery


def bucket_page(
    query: UsageQuery, rows: Sequence[Any], result: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """The answer: each row (with its ``bucket`` start) as result(row) in its bucket."""
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_bucket.setdefault(int(r["bucket"].timestamp()), []).append(result(r))
    data = [
        {
            "object": "bucket",
            "start_time": b.start,
            "end_time": b.end,
            "results": by_bucket.get(b.start, []),
        }
        for b in query.buckets()
    ]
    return {
        "object": "page",
        "data": data,
        "has_more": query.has_more,
        "next_page": query.next_page,
    }


def bucket_params(
    query: UsageQuery, granularity: int
) -> tuple[datetime, datetime, timedelta, list[str] | None, list[str] | None]:
    """The SQL parameters of a page's sum: from, until, bucket width, key ids and models
    (None: all), for ledger rows of ``granularity`` seconds."""
    start, until = query.window(granularity)
    return (
        start,
        until,
        query.width_interval,
        list(query.api_key_ids) or None,
        list(query.models) or None,
    )
