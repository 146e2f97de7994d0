"""Metering's errors: OpenAI's shape, from shared.errors.

MeteringError               500 server_error
└── LedgerUnavailable       503 service_unavailable
"""

from __future__ import annotations

from shared.errors import ApiError, ServiceUnavailable


class MeteringError(ApiError):
    """Base of metering's own errors."""


class LedgerUnavailable(MeteringError, ServiceUnavailable):
    """The usage ledger cannot be read right now (the database is away)."""
