"""The ledger services' errors: OpenAI's shape, from shared.errors.

LedgerError                 500 server_error
└── LedgerUnavailable       503 service_unavailable
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.errors import ApiError, ServiceUnavailable
from shared.exactly_once.retry import RETRYABLE


class LedgerError(ApiError):
    """Base of the ledger services' own errors."""


class LedgerUnavailable(LedgerError, ServiceUnavailable):
    """A ledger cannot be read right now (the database is away)."""


@contextmanager
def unavailable_as_503(ledger: str) -> Iterator[None]:
    """Turn a database that is away (a retryable error) into a 503 the caller retries."""
    try:
        yield
    except RETRYABLE as exc:
        raise LedgerUnavailable(f"The {ledger} is unavailable; retry shortly.") from exc
