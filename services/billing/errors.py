"""Billing's errors: OpenAI's shape, from shared.errors.

BillingError                500 server_error
└── LedgerUnavailable       503 service_unavailable
"""

from __future__ import annotations

from shared.errors import ApiError, ServiceUnavailable


class BillingError(ApiError):
    """Base of billing's own errors."""


class LedgerUnavailable(BillingError, ServiceUnavailable):
    """The cost ledger cannot be read right now (the database is away)."""
