"""Which database errors a ledger transaction retries, and how long it waits between tries.

A retry is always safe for the ledgers: the event-id dedupe and the stored offsets are in
the same transaction as the ledger update, so a transaction that did commit before its
connection died (an ambiguous commit) turns into a no-op on the retry.
"""

from __future__ import annotations

import random

import asyncpg

RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # 40001 serialization failure, 40P01 deadlock
    asyncpg.PostgresConnectionError,  # 08xxx, including a connection lost during commit
    asyncpg.OperatorInterventionError,  # 57xxx: server shutting down or starting up
    asyncpg.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.InterfaceError,  # the client side of a closed connection
    OSError,  # connection refused while the server restarts
    TimeoutError,
)


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter, in seconds."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))


# What a read may meet: any database error, transient or not (the API answers 503 for both).
READ_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *RETRYABLE)
