"""The Usage page's numbers, from the Usage and Costs APIs' buckets (no framework here).

A period is cut into buckets whose width follows its length (hours for a day, days beyond);
the page shows totals, a time series, cost per day, and per-key and per-model tables, all
sums of what the APIs answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.usage_query import LIMITS

PERIODS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
# The most buckets of each width the APIs answer in one page (OpenAI's limits): the Usage
# API's, the smaller of the two for days (the Costs API takes up to 180).
MAX_LIMIT = {width: most for width, (_, most) in LIMITS.items()}
MAX_CUSTOM_DAYS = 366


class PeriodError(ValueError):
    """A custom period the page cannot show."""


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC, cut into buckets of ``width``."""

    key: str
    start: datetime
    end: datetime
    width: str

    @property
    def label(self) -> str:
        if self.key != "custom":
            return PERIODS[self.key]
        last = (self.end - timedelta(seconds=1)).date()
        return f"{self.start.date():%b %-d, %Y} to {last:%b %-d, %Y}"

    def bucket_starts(self) -> list[datetime]:
        """The start of every bucket in the period."""
        step, out, moment = WIDTHS[self.width], [], self.start
        while moment < self.end:
            out.append(moment)
            moment += step
        return out

    def day_starts(self) -> list[datetime]:
        """Midnight (UTC) of every day the period touches: the cost chart's buckets."""
        day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        while day < self.end:
            out.append(day)
            day += timedelta(days=1)
        return out


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def resolve_period(key: str, start: str, end: str, now: datetime) -> Period:
    """The period a page query names; custom dates are whole UTC days, both included."""
    if key == "24h":
        first = _hour(now) - timedelta(hours=23)
        return Period(key, first, first + timedelta(hours=24), "1h")
    if key in ("7d", "30d"):
        days = 7 if key == "7d" else 30
        first = _midnight(now) - timedelta(days=days - 1)
        return Period(key, first, first + timedelta(days=days), "1d")
    if key != "custom":
        raise PeriodError("Choose a period.")
    try:
        first_day, last_day = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise PeriodError("Enter a start and an end date.") from exc
    if last_day < first_day:
        raise PeriodError("The end date is before the start date.")
    if (last_day - first_day).days >= MAX_CUSTOM_DAYS:
        raise PeriodError(f"Choose at most {MAX_CUSTOM_DAYS} days.")
    begin = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    finish = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(days=1)
    width = "1h" if finish - begin <= timedelta(days=2) else "1d"
    return Period(key, begin, finish, width)


def api_query(
    period: Period,
    *,
    width: str,
    group_by: tuple[str, ...],
    key_ids: list[str],
    models: list[str],
) -> list[tuple[str, str]]:
    """The query of one Usage or Costs API call for period."""
    step = int(WIDTHS[width].total_seconds())
    first = int(period.start.timestamp()) // step * step  # the APIs align buckets to widths
    buckets = max(1, -(-(int(period.end.timestamp()) - first) // step))
    query = [
        ("start_time", str(int(period.start.timestamp()))),
        ("end_time", str(int(period.end.timestamp()))),
        ("bucket_width", width),
        ("limit", str(min(buckets, MAX_LIMIT[width]))),
    ]
    query += [("group_by", g) for g in group_by]
    query += [("api_key_ids", k) for k in key_ids]
    query += [("models", m) for m in models]
    return query


@dataclass
class Tally:
    """Sums over some usage and cost results."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add_usage(self, result: dict[str, Any]) -> None:
        self.input_tokens += int(result.get("input_tokens") or 0)
        self.output_tokens += int(result.get("output_tokens") or 0)
        self.cached_tokens += int(result.get("input_cached_tokens") or 0)
        self.requests += int(result.get("num_model_requests") or 0)


def amount(result: dict[str, Any]) -> Decimal:
    """The USD amount of one cost result, exactly (the API sends a decimal string)."""
    value = (result.get("exact_amount") or result.get("amount") or {}).get("value", 0)
    return Decimal(str(value))


@dataclass
class Report:
    """Everything the Usage page shows for one period and filter."""

    period: Period
    totals: Tally
    series: list[tuple[datetime, Tally]]
    cost_days: list[tuple[datetime, Decimal]]
    by_key: dict[str, Tally]
    by_model: dict[str, Tally]

    @property
    def empty(self) -> bool:
        return self.totals.requests == 0 and self.totals.cost == 0


def _slot(starts: list[datetime], moment: datetime) -> datetime | None:
    """The bucket start that moment falls in, or None outside them all."""
    found = None
    for start in starts:
        if start <= moment:
            found = start
        else:
            break
    return found


def build_report(
    period: Period, usage: list[dict[str, Any]], costs: list[dict[str, Any]]
) -> Report:
    """The page's numbers from usage buckets (by key and model) and cost buckets (by day)."""
    starts = period.bucket_starts()
    series = {start: Tally() for start in starts}
    totals, by_key, by_model = Tally(), {}, {}  # type: ignore[var-annotated]
    for bucket in usage:
        slot = _slot(starts, datetime.fromtimestamp(int(bucket["start_time"]), UTC))
        for result in bucket.get("results", []):
            totals.add_usage(result)
            if slot is not None:
                series[slot].add_usage(result)
            by_key.setdefault(result.get("api_key_id") or "", Tally()).add_usage(result)
            by_model.setdefault(result.get("model") or "", Tally()).add_usage(result)
    days = period.day_starts()
    cost_days = {day: Decimal(0) for day in days}
    for bucket in costs:
        slot = _slot(days, datetime.fromtimestamp(int(bucket["start_time"]), UTC))
        for result in bucket.get("results", []):
            value = amount(result)
            totals.cost += value
            if slot is not None:
                cost_days[slot] += value
            by_key.setdefault(result.get("api_key_id") or "", Tally()).cost += value
            if result.get("model"):
                by_model.setdefault(result["model"], Tally()).cost += value
    return Report(
        period=period,
        totals=totals,
        series=list(series.items()),
        cost_days=list(cost_days.items()),
        by_key=dict(sorted(by_key.items(), key=lambda kv: (-kv[1].requests, kv[0]))),
        by_model=dict(sorted(by_model.items(), key=lambda kv: (-kv[1].requests, kv[0]))),
    )
