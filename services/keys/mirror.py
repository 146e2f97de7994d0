"""The direct path to the gateways: each key's new state written to Redis after it committed.

Kafka (the outbox) stays the path that never loses a change; this one makes a change take
effect at every gateway within milliseconds even while Kafka is down: the write is the same
versioned compare-and-set the gateways' feeder uses (``shared/key_store.py``), so whichever
of the two arrives first, the newest version wins, and it publishes the state to every
gateway's subscription. It is bounded by a short timeout and never fails the API call: a
failure is logged and counted, and the outbox still carries the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from shared.events import KeyState
from shared.key_store import KeyStore
from shared.redis_client import PLAIN, REDIS_ERRORS, RedisAuth, connect

log = logging.getLogger(__name__)


class StateMirror:
    """Writes committed key states to the gateways' Redis, best effort, counted."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        timeout_s: float,
        *,
        cluster: bool = False,
        trusted: Callable[[KeyState], bool] | None = None,
        auth: RedisAuth = PLAIN,
    ) -> None:
        # No client-side retries: one attempt within the timeout, then the outbox's turn.
        self.client = connect(redis_url, cluster=cluster, timeout_s=timeout_s, auth=auth)
        # With trusted (the keyring's check), a state in Redis the key service did not make
        # is overwritten whatever its version: a forged one cannot hold back a revocation.
        self.store = KeyStore(self.client, prefix, trusted)
        self.timeout_s = timeout_s
        self.written = 0
        self.failed = 0
        self.last_error: str | None = None

    def stats(self) -> dict[str, Any]:
        """What /readyz may report about the direct path."""
        return {
            "redis_states_written": self.written,
            "redis_states_failed": self.failed,
            "redis_error": self.last_error,
        }

    async def write(self, states: Sequence[KeyState]) -> None:
        """Write states to Redis within the timeout; never raises for a Redis failure."""
        if not states:
            return
        try:
            await asyncio.wait_for(self.store.apply(states), self.timeout_s)
        except (*REDIS_ERRORS, ValidationError) as exc:
            self.failed += len(states)
            self.last_error = type(exc).__name__
            log.warning(
                "key state not written to redis (%s); the outbox carries it",
                type(exc).__name__,
                extra={"key_ids": [s.key_id for s in states]},
            )
        except Exception as exc:
            # Whatever else broke, the change committed: the API call must still succeed.
            self.failed += len(states)
            self.last_error = type(exc).__name__
            log.exception("key state not written to redis; the outbox carries it")
        else:
            self.written += len(states)
            self.last_error = None

    async def close(self) -> None:
        await self.client.aclose()
