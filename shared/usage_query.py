"""The query of the Usage and Costs APIs (OpenAI's organization usage/costs style), validated.

``start_time`` (required) and ``end_time`` (default: now) are Unix seconds, start
inclusive, end exclusive. Buckets are aligned to their width in UTC, the first one holding
``start_time``. ``limit`` counts buckets per page; ``page`` is the opaque cursor a previous
answer gave as ``next_page``. List parameters (``group_by``, ``api_key_ids``, ``models``)
may be repeated, written with brackets (``models[]=``) or comma-separated.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.datastructures import QueryParams

from shared.errors import BadRequest
from shared.openapi import NO_NUL

WIDTH_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
# OpenAI's defaults and maxima of `limit` for each bucket width (usage API; costs: 7, 180).
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
COSTS_LIMITS = {"1d": (7, 180)}
MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z
_PAGE_PREFIX = "page_"


@dataclass(frozen=True)
class Bucket:
    """One time bucket of an answer, in Unix seconds."""

    start: int
    end: int


@dataclass(frozen=True)
class UsageQuery:
    """A validated query, positioned at one page."""

    start_time: int
    end_time: int
    bucket_width: str
    group_by: tuple[str, ...]
    api_key_ids: tuple[str, ...]
    models: tuple[str, ...]
    limit: int
    page_start: int

    @property
    def width(self) -> int:
        return WIDTH_SECONDS[self.bucket_width]

    @property
    def width_interval(self) -> timedelta:
        return timedelta(seconds=self.width)

    def buckets(self) -> list[Bucket]:
        """The buckets of this page, at most ``limit`` of them."""
        starts = range(self.page_start, self.end_time, self.width)
        return [Bucket(s, s + self.width) for s in starts[: self.limit]]

    def window(self, granularity: int) -> tuple[datetime, datetime]:
        """The ledger rows this page reads: rows of ``granularity`` seconds, from..until."""
        buckets = self.buckets()
        first = max(buckets[0].start, self.start_time // granularity * granularity)
        until = min(buckets[-1].end, self.end_time)
        return _utc(first), _utc(until)

    @property
    def has_more(self) -> bool:
        return self.page_start + self.limit * self.width < self.end_time

    @property
    def next_page(self) -> str | None:
        if not self.has_more:
            return None
        token = str(self.page_start + self.limit * self.width).encode()
        return _PAGE_PREFIX + base64.urlsafe_b64encode(token).decode().rstrip("=")


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _list(params: QueryParams, name: str) -> tuple[str, ...]:
    raw = params.getlist(name) + params.getlist(f"{name}[]")
    if any("\x00" in item for item in raw):  # PostgreSQL's text cannot hold it
        raise BadRequest(f"Invalid '{name}': an item holds a NUL character.", param=name)
    return tuple(v.strip() for item in raw for v in item.split(",") if v.strip())


def _int(params: Mapping[str, str], name: str, *, default: int | None = None) -> int:
    value = params.get(name)
    if value is None or value == "":
        if default is None:
            raise BadRequest(f"Missing required parameter: '{name}'.", param=name)
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(
            f"Invalid '{name}': expected an integer, got {value!r}.", param=name
        ) from None
    if not 0 <= number <= MAX_TIME:
        raise BadRequest(f"Invalid '{name}': {number} is out of range.", param=name)
    return number


def _page_start(token: str, first: int, end: int, width: int) -> int:
    body = token.removeprefix(_PAGE_PREFIX)
    try:
        start = int(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        start = -1
    if not token.startswith(_PAGE_PREFIX) or start < 0:
        raise BadRequest("Invalid 'page': not a cursor this API gave.", param="page") from None
    if start < first or start >= end or (start - first) % width:
        raise BadRequest("Invalid 'page': it does not belong to this query.", param="page")
    return start


def parse_usage_query(
    params: QueryParams,
    *,
    widths: Sequence[str],
    group_fields: Sequence[str],
    now: datetime,
    default_width: str = "1d",
    limits: Mapping[str, tuple[int, int]] = LIMITS,
) -> UsageQuery:
    """Validate the query string; every mistake is a BadRequest naming its parameter."""
    known = {"start_time", "end_time", "bucket_width", "group_by", "api_key_ids", "models"}
    known |= {"limit", "page"}
    for name in params:
        if name.removesuffix("[]") not in known:
            raise BadRequest(f"Unrecognized request argument supplied: {name}.", param=name)
    width_name = params.get("bucket_width") or default_width
    if width_name not in widths:
        allowed = ", ".join(widths)
        raise BadRequest(
            f"Invalid 'bucket_width': {width_name!r}; expected one of {allowed}.",
            param="bucket_width",
        )
    width = WIDTH_SECONDS[width_name]
    start = _int(params, "start_time")
    end = _int(params, "end_time", default=min(MAX_TIME, int(now.timestamp()) + 1))
    if end <= start:
        raise BadRequest("'end_time' must be after 'start_time'.", param="end_time")
    group_by = _list(params, "group_by")
    for item in group_by:
        if item not in group_fields:
            raise BadRequest(
                f"Invalid 'group_by': {item!r}; expected some of {', '.join(group_fields)}.",
                param="group_by",
            )
    default_limit, max_limit = limits[width_name]
    limit = _int(params, "limit", default=default_limit)
    if not 1 <= limit <= max_limit:
        raise BadRequest(
            f"Invalid 'limit': {limit}; expected 1 to {max_limit} for {width_name} buckets.",
            param="limit",
        )
    first = start // width * width
    page = params.get("page")
    return UsageQuery(
        start_time=start,
        end_time=end,
        bucket_width=width_name,
        group_by=tuple(dict.fromkeys(group_by)),
        api_key_ids=_list(params, "api_key_ids"),
        models=_list(params, "models"),
        limit=limit,
        page_start=_page_start(page, first, end, width) if page else first,
    )


def _listed(name: str, items: dict[str, Any], what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": items},
        "description": f"{what}; repeat it, write it `{name}[]=`, or separate with commas",
    }


def query_parameters(
    *,
    widths: Sequence[str],
    group_fields: Sequence[str],
    default_width: str = "1d",
    limits: Mapping[str, tuple[int, int]] = LIMITS,
) -> list[dict[str, Any]]:
    """The query as an OpenAPI document states it: what ``parse_usage_query`` enforces, from
    the same bounds. Two rules join parameters, which a parameter's schema cannot say, so
    their descriptions do: ``end_time`` after ``start_time`` and ``limit`` per width."""
    time = {"type": "integer", "minimum": 0, "maximum": MAX_TIME}
    per_width = ", ".join(f"{limits[w][1]} for {w} (default {limits[w][0]})" for w in widths)
    return [
        {
            "name": "start_time",
            "in": "query",
            "required": True,
            "schema": time,
            "description": "Unix seconds, inclusive: the first bucket holds it",
        },
        {
            "name": "end_time",
            "in": "query",
            "schema": time,
            "description": "Unix seconds, exclusive: after start_time (default: now)",
        },
        {
            "name": "bucket_width",
            "in": "query",
            "schema": {"type": "string", "enum": list(widths), "default": default_width},
            "description": "buckets aligned to their width in UTC",
        },
        _listed("group_by", {"type": "string", "enum": list(group_fields)}, "split results by"),
        _listed("api_key_ids", {"type": "string", "pattern": NO_NUL}, "only these keys"),
        _listed("models", {"type": "string", "pattern": NO_NUL}, "only these models"),
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": max(limits[w][1] for w in widths),
            },
            "description": f"buckets per page: at most {per_width}",
        },
        {
            "name": "page",
            "in": "query",
            "schema": {"type": "string", "pattern": f"^{_PAGE_PREFIX}[A-Za-z0-9_-]+$"},
            "description": "the `next_page` of the answer before, to this same query",
        },
    ]
