"""The Usage/Costs query parser on its own: defaults, lists, paging cursors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.datastructures import QueryParams

from shared.errors import BadRequest
from shared.usage_query import parse_usage_query

pytestmark = pytest.mark.unit  # no server: `make test-unit`

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WIDTHS = ("1m", "1h", "1d")
GROUPS = ("api_key_id", "model")


def test_defaults_are_openai_s() -> None:
    q = parse_usage_query(
        QueryParams("start_time=86400"), widths=WIDTHS, group_fields=GROUPS, now=NOW
    )
    assert (q.bucket_width, q.limit, q.group_by) == ("1d", 7, ())
    assert q.end_time == int(NOW.timestamp()) + 1
    assert [b.start for b in q.buckets()] == [86400 * d for d in range(1, 8)]
    assert q.has_more


def test_lists_repeated_bracketed_or_comma_separated() -> None:
    q = parse_usage_query(
        QueryParams("start_time=0&models=a,b&models[]=c&group_by=model&group_by[]=model"),
        widths=WIDTHS,
        group_fields=GROUPS,
        now=NOW,
    )
    assert q.models == ("a", "b", "c")
    assert q.group_by == ("model",)


def test_next_page_walks_every_bucket_once() -> None:
    seen: list[int] = []
    query = "start_time=0&end_time=600&bucket_width=1m&limit=4"
    q = parse_usage_query(QueryParams(query), widths=WIDTHS, group_fields=GROUPS, now=NOW)
    while True:
        seen += [b.start for b in q.buckets()]
        if q.next_page is None:
            break
        q = parse_usage_query(
            QueryParams(f"{query}&page={q.next_page}"), widths=WIDTHS, group_fields=GROUPS, now=NOW
        )
    assert seen == list(range(0, 600, 60))


def test_a_cursor_of_another_query_is_refused() -> None:
    q = parse_usage_query(
        QueryParams("start_time=0&end_time=600&bucket_width=1m&limit=4"),
        widths=WIDTHS,
        group_fields=GROUPS,
        now=NOW,
    )
    with pytest.raises(BadRequest) as info:
        parse_usage_query(
            QueryParams(f"start_time=0&end_time=120&bucket_width=1m&page={q.next_page}"),
            widths=WIDTHS,
            group_fields=GROUPS,
            now=NOW,
        )
    assert info.value.param == "page"


def test_window_reads_only_the_asked_range_within_the_page() -> None:
    q = parse_usage_query(
        QueryParams("start_time=3630&end_time=7300&bucket_width=1h"),
        widths=WIDTHS,
        group_fields=GROUPS,
        now=NOW,
    )
    start, until = q.window(60)
    assert (int(start.timestamp()), int(until.timestamp())) == (3600, 7300)
