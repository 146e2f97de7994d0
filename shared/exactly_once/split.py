"""Find the records the database refuses, by splitting a batch in savepoints (bisection).

A batch is applied as one group inside a savepoint. When the database refuses the group
with an error a record's values can cause (``shared.exactly_once.retry.record_error``), the
savepoint is rolled back and each half is tried in a savepoint of its own, recursively,
until the refused records stand alone; every group that succeeded stays applied in the
enclosing transaction. A batch of n records with k refused ones costs about
2 k log2(n) savepoints, and nothing at all while no record is refused.

A record standing alone and refused is only a *suspect*: a broken schema (a CHECK added
by mistake, a column type changed) refuses every record with the same class 22/23 errors,
and a schema changed while a batch is being split refuses some halves and not others. So
before any record is dead-lettered, ``confirm`` applies a *control* (records this consumer
applied successfully before) in a savepoint that is always rolled back: if the control is
refused as well, the fault is the database's, ``NotRecordSpecific`` is raised and the
consumer stalls loudly and retries instead of dead-lettering. If the control passes, each
suspect is tried alone once more (a schema fixed meanwhile accepts it now); only those
refused again are dead-lettered. Without a known control (a fresh process whose first
batch fails) the SQLSTATE class decides. A control can only catch what it exercises: a
control whose records write nothing (billing's zero-token events) proves little, so the
control holds several records (``CONTROL_SIZE``) of the last group that succeeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from shared.exactly_once.retry import describe, record_error

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

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


CONTROL_SIZE = 8


async def check_control(
    conn: Conn, control: list[Item], work: Callable[[Conn, list[Item]], Awaitable[object]]
) -> None:
    """Apply known-good records in a savepoint, always rolled back; raise if refused."""
    savepoint = conn.transaction()
    await savepoint.start()
    try:
        await work(conn, list(control))
    except Exception as exc:
        if not record_error(exc):
            raise
        raise NotRecordSpecific(
            "records were refused, and so were records applied before: " + describe(exc)
        ) from exc
    finally:
        await savepoint.rollback()


async def confirm(
    conn: Conn,
    suspects: SplitResult[Item],
    control: list[Item],
    work: Callable[[Conn, list[Item]], Awaitable[int]],
    apply_control: Callable[[Conn, list[Item]], Awaitable[object]] | None = None,
) -> SplitResult[Item]:
    """The split's result with its refused records confirmed (see the module docstring).

    apply_control applies the control (default: work); it must not skip records already
    applied, as a dedupe would, or the control would prove nothing.
    """
    if not suspects.refused or not control:
        return suspects
    await check_control(conn, control, apply_control or work)
    done, refused = suspects.done, []
    for suspect in suspects.refused:
        again = await split_apply(conn, [suspect.item], work)
        done += again.done
        refused += again.refused
    return SplitResult(done, refused)
