"""Metering's logic, free of frameworks: usage events in, minute deltas and usage pages out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import UsageRecorded
from shared.exactly_once import bucket_page
from shared.usage_query import UsageQuery

GROUP_FIELDS = ("api_key_id", "model", "project_id")
WIDTHS = ("1m", "1h", "1d")
# The ledger's tables, by the seconds each row covers: minutes, hours, days (UTC).
LEDGER_GRAINS = (60, 3600, 86400)


@dataclass
class MinuteDelta:
    """What a batch adds to one ledger row."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0


MinuteKey = tuple[str, datetime, str, str]  # project, minute, key, model


def minute_deltas(events: Iterable[UsageRecorded]) -> dict[MinuteKey, MinuteDelta]:
    """Sum events into the minute of their ``occurred_at`` (late ones land where they belong)."""
    deltas: dict[MinuteKey, MinuteDelta] = {}
    for e in events:
        minute = e.occurred_at.astimezone(UTC).replace(second=0, microsecond=0)
        key = (e.project_id, minute, e.key_id, e.model)
        d = deltas.get(key)
        if d is None:
            d = deltas[key] = MinuteDelta()
        d.requests += 1
        d.input_tokens += e.input_tokens
        d.cached_input_tokens += e.cached_input_tokens
        d.output_tokens += e.output_tokens
        d.errors += e.status_code >= 400
    return deltas


def rolled_up(deltas: dict[MinuteKey, MinuteDelta], grain: int) -> dict[MinuteKey, MinuteDelta]:
    """Minute deltas summed into rows of ``grain`` seconds (hours, days), UTC-aligned."""
    out: dict[MinuteKey, MinuteDelta] = {}
    for (project, minute, key, model), d in deltas.items():
        stamp = int(minute.timestamp())
        at = datetime.fromtimestamp(stamp - stamp % grain, UTC)
        total = out.get((project, at, key, model))
        if total is None:
            total = out[(project, at, key, model)] = MinuteDelta()
        total.requests += d.requests
        total.input_tokens += d.input_tokens
        total.cached_input_tokens += d.cached_input_tokens
        total.output_tokens += d.output_tokens
        total.errors += d.errors
    return out


def usage_page(project_id: str, query: UsageQuery, rows: Sequence[Any]) -> dict[str, Any]:
    """The Usage API's answer: every bucket of the page, results from the summed rows."""

    def result(r: Any) -> dict[str, Any]:
        return {
            "object": "organization.usage.completions.result",
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "input_cached_tokens": r["cached_input_tokens"],
            "num_model_requests": r["requests"],
            "num_errors": r["errors"],
            "project_id": project_id,
            "api_key_id": r["key_id"],
            "model": r["model"],
        }

    return bucket_page(query, rows, result)
