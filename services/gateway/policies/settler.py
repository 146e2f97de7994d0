"""Settlements: each admitted request's real tokens and cost, sent to Redis in pipelines.

Off the request path: a request queues its settlement and answers; one loop sends up to
``BATCH`` at a time in one pipeline. While Redis is away they wait (bounded), and the spend
they carry stays counted on this replica (``LocalCounters.owe``) until Redis has taken it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from services.gateway.policies.counters import RedisCounters
from services.gateway.policies.local import LocalCounters
from services.gateway.policies.plan import Plan
from shared.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)

BATCH = 500
# A settlement waits this long for others to share its pipeline (at low concurrency one
# request per round trip otherwise); a limit counts its real tokens that much later.
LINGER_S = 0.01
BACKLOG_MAX = 200_000
_ERRORS = REDIS_ERRORS


@dataclass(frozen=True, slots=True)
class Settlement:
    """One request's real usage: tokens (input and output) and cost in nano-dollars."""

    plan: Plan
    reservation: str
    second: int
    tokens: int
    cost: int


class Settler:
    """Queues settlements and sends them to Redis, keeping them while it is away."""

    def __init__(self, counters: RedisCounters, local: LocalCounters, *, timeout_s: float) -> None:
        self.counters = counters
        self.local = local
        self.timeout_s = timeout_s
        self._queue: deque[Settlement] = deque()
        self._wake = asyncio.Event()
        self.failures = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, settlement: Settlement) -> None:
        if len(self._queue) >= BACKLOG_MAX:
            # Its spend reaches the counters anyway at the next reconciliation with the ledger.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("settlement backlog full: %d left to the ledger", self.dropped)
            return
        self._queue.append(settlement)
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if len(self._queue) < BATCH:
                await asyncio.sleep(LINGER_S)
            if not await self._send_batch():
                await asyncio.sleep(1.0)

    async def flush(self, within_s: float) -> None:
        """Send everything queued, for at most ``within_s`` (a stop must not hang)."""
        try:
            async with asyncio.timeout(within_s):
                while self._queue and await self._send_batch():
                    pass
        except TimeoutError:
            log.warning("%d settlements not sent at stop", len(self._queue))

    async def _send_batch(self) -> bool:
        batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
        try:
            await asyncio.wait_for(
                self.counters.settle(
                    [(s.plan, s.reservation, s.second, s.tokens, s.cost) for s in batch]
                ),
                self.timeout_s,
            )
        except _ERRORS as exc:
            self.failures += 1
            log.warning("settling %d requests failed (%s); kept for later", len(batch), exc)
            return False
        for s in batch:
            self._queue.popleft()
            for budget in s.plan.budgets:
                self.local.paid(budget.redis_key, s.cost)
        return True
