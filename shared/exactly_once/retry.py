"""Which database errors a ledger transaction retries, which a record's values cause, and backoff.

A retry is always safe for the ledgers: the event-id dedupe and the stored offsets are in
the same transaction as the ledger update, so a transaction that did commit before its
connection died (an ambiguous commit) turns into a no-op on the retry.

Three kinds of database error, told apart by SQLSTATE class:

- transient (``RETRYABLE``): connection lost, serialization failure, deadlock, shutdown,
  too many connections. Retried with backoff, whatever the records.
- possibly caused by a record's own values (``record_error``): class 22 (data exception:
  a NUL in a text column, a value out of range), 23 (integrity constraint violation: a
  CHECK or NOT NULL a value breaks), 54 (program limit exceeded: an index row too large),
  and asyncpg's client-side ``DataError`` (a value it cannot encode for its argument).
  These are only *candidates*: see shared/exactly_once/split.py for how a record is proven at
  fault before it is dead-lettered.
- everything else (missing table 42P01, permission denied 42501, a bug in our SQL):
  never a record's fault. The consumer stalls loudly and retries; it never dead-letters.
"""

from __future__ import annotations

import random

import asyncpg
from asyncpg.exceptions import _base as pg_base

RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # 40001 serialization failure, 40P01 deadlock
    asyncpg.PostgresConnectionError,  # 08xxx, including a connection lost during commit
    asyncpg.OperatorInterventionError,  # 57xxx: server shutting down or starting up
    asyncpg.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.InterfaceError,  # the client side of a closed connection
    OSError,  # connection refused while the server restarts
    TimeoutError,
)

# SQLSTATE classes a record's values can cause, and that no retry cures.
RECORD_CLASSES = frozenset({"22", "23", "54"})


def record_error(exc: BaseException) -> bool:
    """True when exc may be caused by the values a statement was given (a dead-letter candidate)."""
    if isinstance(exc, pg_base.DataError):
        # Client side: asyncpg could not encode an argument (it subclasses InterfaceError,
        # which is RETRYABLE, so this test comes first).
        return True
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, RETRYABLE):
        return str(exc.sqlstate or "")[:2] in RECORD_CLASSES
    return False


def describe(exc: BaseException, limit: int = 500) -> str:
    """SQLSTATE, class and message of a database error, bounded, for logs and dead letters."""
    sqlstate = getattr(exc, "sqlstate", None) or "client"
    text = f"{sqlstate} {type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter, in seconds."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))


# What a read may meet: any database error, transient or not (the API answers 503 for both).
READ_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *RETRYABLE)
