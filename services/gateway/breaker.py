"""A circuit breaker: after a failure, a dependency is skipped for a while, not waited on."""

from __future__ import annotations

import time


class Breaker:
    """After a failure, skip a dependency for a while instead of waiting on it per request."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._down_until = 0.0

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_s

    def succeeded(self) -> None:
        self._down_until = 0.0
