"""The key-state subscription: new key states pushed by Redis, applied to the process cache.

Every write of a newer key state to Redis publishes it (``shared/key_store.py``), whoever wrote
it: the key service right after its transaction committed, or any gateway's feeder. So a
revocation reaches this replica's cache within milliseconds even while Kafka is down, and the
cache may trust an entry for its full TTL only while this subscription has been up since the
entry was confirmed (``LocalCache.covered``). Pub/sub delivers nothing that was published
while a subscriber was away: on any loss the cache's trust is shortened at once, and after a
reconnect only entries confirmed since then get the full TTL back. Anyone who may PUBLISH on
the channel could push a state: only those the key service signed are applied (``trust.py``).

A connection that is silently gone (no reset, no answer) is noticed by pinging it every
``ping_s``: no reply within ``dead_after_s`` counts as a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from redis.asyncio.client import PubSub

from services.gateway.keys.cache import LocalCache
from services.gateway.keys.trust import StateTrust
from shared.key_store import parse_published
from shared.redis_client import PLAIN, REDIS_ERRORS, RedisAuth, connect_one
from shared.worker import check_cancelled

log = logging.getLogger(__name__)
_READ_S = 0.2


# What losing the subscription raises: its worker resubscribes, with a warning, no traceback.


class Subscriber:
    """One subscription per ``run``; run by a worker (shared/worker.py) that resubscribes."""

    def __init__(
        self,
        *,
        redis_url: str,
        channel: str,
        local: LocalCache,
        trust: StateTrust,
        timeout_s: float = 1.0,
        ping_s: float = 0.5,
        dead_after_s: float = 2.0,
        redis_urls: Callable[[], list[str]] | None = None,
        auth: RedisAuth = PLAIN,
    ) -> None:
        self.auth = auth
        # Where to listen: the one node, or any node of a cluster (each hears every PUBLISH).
        self.redis_urls = redis_urls or (lambda: [redis_url])
        self._next = 0
        self.channel = channel
        self.local = local
        self.trust = trust
        self.timeout_s = timeout_s
        self.ping_s = ping_s
        self.dead_after_s = dead_after_s
        self.received = 0
        self.losses = 0

    @property
    def up(self) -> bool:
        return self.local.covered_since is not None

    async def run(self) -> None:
        """Listen until the subscription is lost (raises) or the task is cancelled."""
        try:
            await self._listen()
        except REDIS_ERRORS:
            self.losses += 1
            raise
        finally:
            self.local.covered(None)
        # Only a cancel swallowed below ends _listen without an error: stop, as asked.
        check_cancelled()

    async def _listen(self) -> None:
        # A client of its own: the shared one's socket timeout suits requests, not a wait. On
        # a cluster, each attempt tries the next node (every node hears every PUBLISH).
        urls = self.redis_urls()
        url = urls[self._next % len(urls)]
        self._next += 1
        client = connect_one(url, timeout_s=self.timeout_s, max_connections=2, auth=self.auth)
        pubsub = client.pubsub()
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout_s)
            await self._confirmed(pubsub)
            # Anything published from here on reaches us; what was confirmed before may
            # have missed a change, so it gets only the short trust (see LocalCache).
            self.local.covered(time.monotonic())
            log.info("key-state subscription up", extra={"channel": self.channel})
            await self._receive(pubsub)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.wait_for(pubsub.aclose(), 1)  # type: ignore[no-untyped-call]
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.wait_for(client.aclose(), 1)

    async def _confirmed(self, pubsub: PubSub) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=_READ_S)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError("no subscribe confirmation")

    async def _receive(self, pubsub: PubSub) -> None:
        last_heard = last_ping = time.monotonic()
        while True:
            check_cancelled()  # a cancel a timed read swallowed (Python 3.11)
            message = await pubsub.get_message(timeout=_READ_S)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    self._apply(message)
            if now - last_heard > self.dead_after_s:
                raise TimeoutError("the subscription stopped answering")
            if now - last_ping >= self.ping_s:
                await asyncio.wait_for(pubsub.ping(), self.timeout_s)
                last_ping = now

    def _apply(self, message: dict[str, Any]) -> None:
        try:
            state = parse_published(message["data"])
        except ValidationError:
            self.trust.refused("subscription", "not a key state")
            return
        if self.trust.admit(state, "subscription"):
            self.local.put(state)
        self.received += 1
