"""The key-state subscription stops when asked, even after a library swallowed the request.

On Python 3.11, ``asyncio.wait_for`` and redis-py's timed reads can swallow a cancellation that
lands just as the awaited call completes. The subscription's loops then ran on forever and the
gateway's shutdown hung (seen as a test teardown that never ended).
"""

from __future__ import annotations

import asyncio

from deploy.stack import Endpoints
from services.gateway.keys.cache import LocalCache
from services.gateway.keys.subscriber import Subscriber
from services.gateway.keys.trust import StateTrust
from services.gateway.telemetry.metrics import Metrics
from tests.polling import eventually
from tests.state_macs import KEYRING


class SwallowingSubscriber(Subscriber):
    """A subscription whose inner wait loses the cancellation, as 3.11's wait_for can."""

    async def _listen(self) -> None:
        try:
            await super()._listen()
        except asyncio.CancelledError:
            return


async def test_a_swallowed_cancellation_still_stops_the_subscription(
    endpoints: Endpoints, redis_prefix: str
) -> None:
    local = LocalCache(size=10, ttl_s=30, negative_ttl_s=1)
    subscriber = SwallowingSubscriber(
        redis_url=endpoints.redis_url,
        channel=f"{redis_prefix}key-states",
        local=local,
        trust=StateTrust(KEYRING, Metrics()),
    )
    task = asyncio.create_task(subscriber.run())
    try:
        await eventually(lambda: _up(subscriber), until=bool, what="subscription up")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert done, "the subscription kept running after it was cancelled"
        assert task.cancelled()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=3)


async def _up(subscriber: Subscriber) -> bool:
    return subscriber.up
