"""Template filters: dates, counts and money as the pages show them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from jinja2 import Environment


def to_datetime(value: Any) -> datetime | None:
    """A timezone-aware datetime from Unix seconds or an ISO 8601 string; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: Any, empty: str = "Never") -> str:
    """``Nov 27, 2026, 03:15 UTC``, or empty when there is no date."""
    moment = to_datetime(value)
    if moment is None:
        return empty
    return moment.astimezone(UTC).strftime("%b %-d, %Y, %H:%M UTC")


def iso(value: Any) -> str:
    """ISO 8601 in UTC, for ``<time datetime=...>``."""
    moment = to_datetime(value)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def number(value: int | float | Decimal) -> str:
    """A count with thousands separators."""
    return f"{value:,}"


def usd(value: Decimal | int | str) -> str:
    """Dollars: cents when it is at least a cent, else up to six decimals (tiny demo costs)."""
    amount = Decimal(value)
    if amount == 0:
        return "$0.00"
    if abs(amount) >= Decimal("0.01"):
        return "$" + f"{amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    small = amount.quantize(Decimal("0.000001"), ROUND_HALF_UP).normalize()
    return f"${small:f}" if small != 0 else "<$0.000001"


def install_filters(env: Environment) -> None:
    """Register the filters on a Jinja environment."""
    env.filters.update(when=when, iso=iso, number=number, usd=usd)
