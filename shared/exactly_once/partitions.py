"""Tables that grow with time, in one partition a UTC day, dropped whole past their retention.

``DayPartitions`` keeps the partitions of one table: ``ensure`` attaches the days missing (an
empty table made ``LIKE`` the parent, then ``ATTACH PARTITION``, which takes only a SHARE UPDATE
EXCLUSIVE lock on the parent: reads and writes go on), ``drop_before`` drops every day wholly
before a cut-off (retention with no ``DELETE``, no bloat, no vacuum). Each runs in a short
transaction of its own, under an advisory lock per table, so replicas doing it at once wait for
each other instead of failing; a partition dropped or made by another replica is seen in the
catalogue, never assumed.

Two kinds of range key: a ``timestamptz`` column (``usage_minute.minute``), or a UUIDv7 whose
first 48 bits are its Unix milliseconds (``processed_events.event_id``): a day of event ids is
the range of UUIDs from that day's first millisecond to the next day's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

Key = Literal["timestamptz", "uuid7"]
_DAY = re.compile(r"_d(\d{8})$")


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond (and every later one is above it)."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=millis << 80)


def uuid7_time(value: uuid.UUID) -> datetime | None:
    """When a UUIDv7 was made (its first 48 bits), or None if it is not a version 7 UUID."""
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


class DayPartitions:
    """The day partitions of ``table`` (a table ``PARTITION BY RANGE`` on a ``key`` column)."""

    def __init__(self, table: str, key: Key) -> None:
        self.table = table
        self.key = key
        self.known: set[date] = set()  # days seen attached, in the catalogue

    def name(self, day: date) -> str:
        return f"{self.table}_d{day:%Y%m%d}"

    def _bound(self, day: date) -> str:
        start = day_start(day)
        value = str(uuid7_floor(start)) if self.key == "uuid7" else start.isoformat()
        return f"'{value}'"

    async def days(self, conn: Conn) -> set[date]:
        """The days attached now, from the catalogue."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = $1::regclass",
            self.table,
        )
        found = set()
        for row in rows:
            match = _DAY.search(row["relname"])
            if match:
                found.add(datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date())
        return found

    async def ensure(self, conn: Conn, wanted: Iterable[date]) -> list[date]:
        """Attach each wanted day that is missing; return the days made."""
        wanted = set(wanted) - self.known
        if not wanted:
            return []
        made = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            present = await self.days(conn)
            for day in sorted(wanted - present):
                name = self.name(day)
                await conn.execute(
                    f'CREATE TABLE "{name}" (LIKE "{self.table}" INCLUDING DEFAULTS'
                    " INCLUDING CONSTRAINTS)"
                )
                await conn.execute(
                    f'ALTER TABLE "{self.table}" ATTACH PARTITION "{name}"'
                    f" FOR VALUES FROM ({self._bound(day)}) TO ({self._bound(day + timedelta(1))})"
                )
                made.append(day)
        self.known |= wanted  # committed: every wanted day is attached now
        return made

    async def drop_before(self, conn: Conn, cutoff: date) -> list[date]:
        """Drop every day before ``cutoff`` (its rows are past retention); return them."""
        dropped = []
        async with conn.transaction():
            # A drop locks the parent whole: wait for running reads at most this long, and
            # try again at the next upkeep rather than stall the ledger's writes behind it.
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            for day in sorted(await self.days(conn)):
                if day < cutoff:
                    await conn.execute(f'DROP TABLE "{self.name(day)}"')
                    dropped.append(day)
        self.known -= set(dropped)
        self.known = {d for d in self.known if d >= cutoff}
        return dropped


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(n) for n in range((last - first).days + 1)]
