"""Find the records the database refuses, by splitting a batch in savepoints (bisection).

A batch is applied as one group inside a savepoint. When the database refuses the group
with an error a record's values can cause (``shared.ledger_retry.record_error``), the
savepoint is rolled back and each half is tried in a savepoint of its own, recursively,
until the refused records stand alone; every group that succeeded stays applied in the
enclosing transaction. A batch of n records with k refused ones costs about
2 k log2(n) savepoints, and nothing at all while no record is refused.

A record standing alone and refused is only a *suspect*: a broken schema (a CHECK added
by mistake, a column type changed) refuses every record with the same class 22/23 errors.
So when no record of the group succeeded, a *control* (a record this consumer applied
successfully before) is applied too, in a savepoint that is always rolled back: if the
control is refused as well, the fault is the database's, ``NotRecordSpecific`` is raised
and the consumer stalls loudly and retries instead of dead-lettering the batch. Without
a known control (a fresh process whose first batch all fails) the SQLSTATE class decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from shared.ledger_retry import describe, record_error

if TYPE_CHECKING:
    from shared.ledger_types import Conn

Item = TypeVar("Item")


class NotRecordSpecific(Exception):
    """Every record of a batch was refused, and so was a record known to be good."""


@dataclass(frozen=True)
class Refused(Generic[Item]):
    """One record the database refused on its own, and why."""

    item: Item
    error: BaseException

    @property
    def reason(self) -> str:
        return "database refused the record: " + describe(self.error)


@dataclass(frozen=True)
class SplitResult(Generic[Item]):
    """What applying a batch by halves gave: the work's total, and the refused records."""

    done: int
    refused: list[Refused[Item]]


async def split_apply(
    conn: Conn,
    items: list[Item],
    work: Callable[[Conn, list[Item]], Awaitable[int]],
) -> SplitResult[Item]:
    """Apply items with work in savepoints, halving any group refused for its values.

    work returns how many items it applied (for the caller's counters). Any other error
    (transient, or not a record's fault) propagates, and the caller's transaction with it.
    """
    if not items:
        return SplitResult(0, [])
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            return SplitResult(await work(conn, items), [])
    except Exception as exc:
        if not record_error(exc):
            raise
        if len(items) == 1:
            return SplitResult(0, [Refused(items[0], exc)])
    mid = len(items) // 2
    first = await split_apply(conn, items[:mid], work)
    second = await split_apply(conn, items[mid:], work)
    return SplitResult(first.done + second.done, first.refused + second.refused)


async def check_control(
    conn: Conn, control: Item, work: Callable[[Conn, list[Item]], Awaitable[object]]
) -> None:
    """Apply a known-good record in a savepoint, always rolled back; raise if it is refused."""
    savepoint = conn.transaction()
    await savepoint.start()
    try:
        await work(conn, [control])
    except Exception as exc:
        if not record_error(exc):
            raise
        raise NotRecordSpecific(
            "every record was refused, and so was one applied before: " + describe(exc)
        ) from exc
    finally:
        await savepoint.rollback()
