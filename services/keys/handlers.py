"""The usage.events consumer that keeps each key's ``last_used_at`` current, in batches.

Moving ``last_used_at`` forward is idempotent (the greatest time wins), so redelivery is
harmless: offsets are committed after the batch's update committed, and a new group starts
from the earliest retained record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.keys import repository as repo
from services.keys.settings import KeysSettings
from shared.events import UsageRecorded
from shared.kafka import ensure_topics
from shared.ledger_retry import READ_ERRORS, backoff

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 15.0


def latest_use(values: list[bytes | None]) -> dict[str, datetime]:
    """The latest ``occurred_at`` per key id among the records; unparsable ones are skipped."""
    latest: dict[str, datetime] = {}
    for value in values:
        try:
            event = UsageRecorded.model_validate_json(value or b"")
        except ValidationError:
            # Metering and billing dead-letter such records; here they only carry no time.
            log.warning("skipping a usage record that is not a UsageRecorded event")
            continue
        if event.key_id not in latest or latest[event.key_id] < event.occurred_at:
            latest[event.key_id] = event.occurred_at
    return latest


class LastUsedConsumer:
    """Consumes usage.events in its own group and moves ``last_used_at`` forward."""

    def __init__(self, settings: KeysSettings, pool: asyncpg.Pool, client_id: str) -> None:
        self.settings = settings
        self.pool = pool
        self.client_id = client_id
        self.updated = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the consumer."""
        return {"last_used_updates": self.updated}

    def start(self) -> None:
        """Consume in the background (and keep retrying while Kafka is away)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="keys-last-used")

    async def stop(self) -> None:
        """Stop consuming; uncommitted records come again to the next consumer."""
        if self._task is not None:
            # Ask first (a consumer cancelled half-way through its start leaks sockets), then
            # cancel; either way bounded, since aiokafka may sit in a group join meanwhile.
            self._stopping.set()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                self._task.cancel()
                done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                log.warning("last_used consumer did not stop within %s s", 2 * STOP_TIMEOUT_S)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                self.settings.usage_topic,
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=self.settings.consumer_group,
                client_id=self.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Bound how long a join (and so a stop during one) can wait for the group.
                rebalance_timeout_ms=10_000,
                session_timeout_ms=10_000,
            )
            try:
                # Subscribing to a topic not created yet only logs errors until it exists.
                await ensure_topics(
                    self.settings.kafka_bootstrap, prefix=self.settings.topic_prefix, timeout=10
                )
                await consumer.start()
                attempt = 0
                await self._consume(consumer)
            except (KafkaError, *READ_ERRORS) as exc:
                attempt += 1
                log.warning("last_used consumer interrupted: %s: %s", type(exc).__name__, exc)
                await self._pause(backoff(attempt, base=0.2, cap=5.0))
            except Exception:
                # last_used_at must keep flowing whatever broke; start over with a new consumer.
                attempt += 1
                log.exception("last_used consumer failed; restarting it")
                await self._pause(backoff(attempt, base=0.2, cap=5.0))
            finally:
                with contextlib.suppress(KafkaError, TimeoutError):
                    await asyncio.wait_for(consumer.stop(), 10)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            batches = await consumer.getmany(
                timeout_ms=1000, max_records=self.settings.last_used_batch
            )
            values = [record.value for records in batches.values() for record in records]
            if not values:
                continue
            latest = latest_use(values)
            if latest:
                self.updated += await repo.touch_last_used(
                    self.pool, list(latest), list(latest.values())
                )
            await consumer.commit()
