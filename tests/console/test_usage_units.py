"""The Usage page's arithmetic, charts and formats, as pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.console.charts import Series, bar_chart, compact, dollars, nice_ceiling
from services.console.formatting import usd, when
from services.console.usage import Period, PeriodError, api_query, build_report, resolve_period
from services.console.usage_pages import _cell

pytestmark = pytest.mark.unit  # no server: `make test-unit`

NOW = datetime(2026, 11, 27, 14, 37, 12, tzinfo=UTC)


def test_last_24_hours_is_24_hourly_buckets_ending_with_the_current_hour() -> None:
    period = resolve_period("24h", "", "", NOW)
    starts = period.bucket_starts()
    assert period.width == "1h"
    assert len(starts) == 24
    assert starts[-1] == datetime(2026, 11, 27, 14, tzinfo=UTC)
    assert period.end > NOW


@pytest.mark.parametrize(("key", "days"), [("7d", 7), ("30d", 30)])
def test_day_periods_are_whole_utc_days_including_today(key: str, days: int) -> None:
    period = resolve_period(key, "", "", NOW)
    assert period.width == "1d"
    assert len(period.bucket_starts()) == days
    assert period.bucket_starts()[-1] == datetime(2026, 11, 27, tzinfo=UTC)
    assert period.day_starts() == period.bucket_starts()


def test_custom_periods_include_both_dates_and_pick_their_bucket_width() -> None:
    short = resolve_period("custom", "2026-11-26", "2026-11-27", NOW)
    assert (short.start, short.end, short.width) == (
        datetime(2026, 11, 26, tzinfo=UTC),
        datetime(2026, 11, 28, tzinfo=UTC),
        "1h",
    )
    assert len(short.bucket_starts()) == 48
    long = resolve_period("custom", "2026-10-01", "2026-11-27", NOW)
    assert long.width == "1d"
    assert len(long.bucket_starts()) == 58
    assert long.label == "Oct 1, 2026 to Nov 27, 2026"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-27", "2026-11-01", "before the start"),
        ("", "2026-11-01", "start and an end"),
        ("yesterday", "today", "start and an end"),
        ("2024-01-01", "2026-01-01", "at most"),
    ],
)
def test_impossible_custom_periods_are_refused(start: str, end: str, message: str) -> None:
    with pytest.raises(PeriodError, match=message):
        resolve_period("custom", start, end, NOW)
    with pytest.raises(PeriodError):
        resolve_period("90d", "", "", NOW)


def test_the_api_query_names_every_filter_and_caps_the_page_size() -> None:
    period = resolve_period("custom", "2026-01-01", "2026-03-31", NOW)
    query = api_query(
        period,
        width="1d",
        group_by=("api_key_id", "model"),
        key_ids=["key_a", "key_b"],
        models=["m1"],
    )
    assert ("bucket_width", "1d") in query
    assert ("limit", "31") in query  # 90 buckets: the client follows next_page
    assert [v for k, v in query if k == "group_by"] == ["api_key_id", "model"]
    assert [v for k, v in query if k == "api_key_ids"] == ["key_a", "key_b"]
    assert [v for k, v in query if k == "models"] == ["m1"]
    day = resolve_period("24h", "", "", NOW)
    costs = dict(api_query(day, width="1d", group_by=(), key_ids=[], models=[]))
    assert costs["limit"] == "2"  # 24 hours from 15:00 yesterday touch two UTC days


def _bucket(start: datetime, *results: dict[str, object]) -> dict[str, object]:
    return {
        "start_time": int(start.timestamp()),
        "end_time": int((start + timedelta(hours=1)).timestamp()),
        "results": list(results),
    }


def _use(key: str, model: str, i: int, o: int, n: int) -> dict[str, object]:
    return {
        "api_key_id": key,
        "model": model,
        "input_tokens": i,
        "output_tokens": o,
        "input_cached_tokens": 0,
        "num_model_requests": n,
    }


def _cost(key: str, model: str, value: str) -> dict[str, object]:
    return {"api_key_id": key, "model": model, "amount": {"value": Decimal(value)}}


def test_the_report_sums_buckets_into_totals_series_days_keys_and_models() -> None:
    period = resolve_period("24h", "", "", NOW)
    h14, h13 = datetime(2026, 11, 27, 14, tzinfo=UTC), datetime(2026, 11, 27, 13, tzinfo=UTC)
    usage = [
        _bucket(h13, _use("key_a", "m1", 100, 10, 2)),
        _bucket(h14, _use("key_a", "m1", 5, 1, 1), _use("key_b", "m2", 50, 50, 4)),
    ]
    day = datetime(2026, 11, 27, tzinfo=UTC)
    costs = [
        _bucket(day - timedelta(days=1)),
        _bucket(day, _cost("key_a", "m1", "0.1"), _cost("key_b", "m2", "0.2")),
    ]
    report = build_report(period, usage, costs)
    t = report.totals
    assert (t.input_tokens, t.output_tokens, t.requests) == (155, 61, 7)
    assert t.cost == Decimal("0.3")  # exact: never 0.30000000000000004
    series = dict(report.series)
    assert series[h13].requests == 2
    assert series[h14].input_tokens == 55
    assert sum(s.requests for s in series.values()) == 7
    assert dict(report.cost_days)[day] == Decimal("0.3")
    assert list(report.by_key) == ["key_b", "key_a"]  # most requests first
    assert report.by_key["key_a"].requests == 3
    assert report.by_key["key_a"].cost == Decimal("0.1")
    assert report.by_model["m2"].output_tokens == 50
    assert not report.empty
    assert build_report(period, [], []).empty


def test_charts_scale_to_the_tallest_bar_and_escape_their_labels() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 3, 180, 2400)] == [1.0, 1.0, 5.0, 200.0, 2500.0]
    svg = str(
        bar_chart(
            title="Tokens",
            description="per hour",
            labels=["<script>", "b", "c"],
            series=[Series("Input", "input", [10, 0, 40]), Series("Output", "output", [10, 0, 0])],
            fmt=compact,
        )
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert svg.count("<g>") == 3
    assert 'role="img"' in svg
    heights = [float(h) for h in re.findall(r'<rect class="\w+" [^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 3  # zero values draw nothing
    assert max(heights) == pytest.approx(2 * (heights[0] + heights[1]))  # 40 vs 10 + 10 stacked
    assert "Input 10; Output 10" in svg


def test_money_dates_and_csv_cells() -> None:
    axis = [dollars(v) for v in (0, 0.000025, 0.0000063, 0.00125, 0.75, 20, 1500)]
    assert axis == ["$0", "$0.000025", "$0.0000063", "$0.0013", "$0.75", "$20", "$1.5K"]
    assert usd(Decimal(0)) == "$0.00"
    assert usd(Decimal("0.0042")) == "$0.0042"
    assert usd(Decimal("1234.565")) == "$1,234.57"  # half-up, as billing rounds
    assert usd(Decimal("0.0000001")) == "<$0.000001"
    assert when(None) == "Never"
    assert when(1_764_254_100) == "Nov 27, 2025, 14:35 UTC"
    assert when("2026-11-27T14:35:00Z") == "Nov 27, 2026, 14:35 UTC"
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("@sum") == "'@sum"
    assert _cell("production-app") == "production-app"


def test_a_period_label_reads_as_the_page_shows_it() -> None:
    assert resolve_period("7d", "", "", NOW).label == "Last 7 days"
    assert isinstance(resolve_period("30d", "", "", NOW), Period)
