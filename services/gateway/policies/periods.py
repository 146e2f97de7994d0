"""Budget periods: UTC day, UTC calendar month, or all time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.policy import Period

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Window:
    """One period of a budget: its counter's id, where it starts and when it resets."""

    period_id: str
    since: datetime
    resets_at: datetime | None  # None: never (a total budget)

    @property
    def since_unix(self) -> int:
        return int(self.since.timestamp())

    def ended(self, now: datetime) -> bool:
        return self.resets_at is not None and self.resets_at <= now

    def ttl_ms(self, now: datetime) -> int:
        """How long its counter must live: a day past its reset (0: for ever)."""
        if self.resets_at is None:
            return 0
        return int((self.resets_at - now).total_seconds() * 1000) + _DAY_MS


def window(period: Period, now: datetime) -> Window:
    """The period of ``period`` that holds ``now``."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(f"d{start:%Y%m%d}", start, start + timedelta(days=1))
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).replace(day=1)
        return Window(f"m{start:%Y%m}", start, following)
    return Window("total", datetime(1970, 1, 1, tzinfo=UTC), None)
