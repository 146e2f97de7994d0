"""The outbox relay: publishes outbox rows to Kafka in the order written, then deletes them.

Rows carry their topic: ``keys.events`` (key states) and ``audit.events`` (audit log
entries), each published by its own declared publisher (``shared/bus.py``), so one relay keeps
both in commit order.

One relay at a time per schema publishes (a session advisory lock on its listening
connection), so replicas cannot interleave a key's versions. A transaction's NOTIFY wakes it
at once; a poll catches anything a lost notification missed. A batch is deleted only after
the broker acknowledged every message of it; when Kafka fails, the producer (a FastStream
broker's, with the publisher of ``shared/bus.py``) is replaced and the same batch is sent
again from its oldest message, so nothing is lost and the newest version of a key is always
the last one written (a duplicate of an older version is harmless: consumers ignore versions
older than the one they hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher

from services.keys import repository as repo
from services.keys.settings import KeysSettings
from shared.bus import audit_events_publisher, keys_events_publisher, new_broker
from shared.exactly_once.retry import READ_ERRORS, backoff
from shared.kafka import ensure_topics
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS
from shared.worker import Backoff, Worker

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 20.0


class OutboxRelay:
    """Moves committed outbox rows to Kafka, in order, at least once."""

    def __init__(self, settings: KeysSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.published = 0
        self.last_error: str | None = None
        self.leader = False
        self._wake = asyncio.Event()
        # One FastStream broker per connection to Kafka (shared/bus.py), replaced after a
        # failure; its publisher is the one the AsyncAPI document declares.
        self._broker: KafkaBroker | None = None
        self._publishers: dict[str, DefaultPublisher] | None = None
        # Whatever breaks the relay (Kafka or the database away, a driver in a bad state after
        # an outage), it must outlive it: started over on a fresh connection, after a pause.
        self.worker = Worker(
            "keys-outbox-relay",
            self._lead,
            expected=(*READ_ERRORS, KafkaError),
            backoff=Backoff(0.2, 5.0),
            on_error=self._failed,
            cancel_wait_s=STOP_TIMEOUT_S,
        )

    def stats(self) -> dict[str, Any]:
        """What /readyz reports about the relay."""
        return {
            "relay_leader": self.leader,
            "relay_published": self.published,
            "relay_error": self.last_error,
        }

    def start(self) -> None:
        """Run the relay in the background."""
        self.worker.start()

    async def stop(self) -> None:
        """Stop after the batch in flight; what is left goes out on the next start."""
        # Ask first (cancelling a Kafka client half-way through its start leaks sockets),
        # then cancel: both bounded.
        self._wake.set()
        await self.worker.stop(grace_s=STOP_TIMEOUT_S)
        await self._close_broker()

    def _failed(self, exc: Exception) -> None:
        self.leader = False
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _lead(self) -> None:
        """Hold the relay lock on a connection of our own, then publish until stopped."""
        dsn = self.settings.database_url.get_secret_value()
        conn = await asyncpg.connect(dsn, server_settings={"search_path": self.settings.db_schema})
        try:
            lock = f"keys-outbox-relay:{self.settings.db_schema}"
            # Another replica may be the relay; take over when its session ends.
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):
                if self.worker.stopping.is_set():
                    return
                await self.worker.pause(self.settings.relay_poll_s)
            self.leader = True
            await conn.add_listener(self.settings.notify_channel, self._notified)
            # Batches are read and deleted on this same connection: when it breaks, the lock
            # goes with it and everything starts over on a fresh one.
            await self._publish_forever(conn)
        finally:
            self.leader = False
            with contextlib.suppress(*READ_ERRORS):
                await asyncio.wait_for(conn.close(), 5)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _publish_forever(self, conn: asyncpg.Connection) -> None:
        attempt = 0
        while not self.worker.stopping.is_set():
            if conn.is_closed():
                raise asyncpg.InterfaceError("the relay's connection closed")
            self._wake.clear()
            try:
                sent = await self._publish_batch(conn)
            except (KafkaError, TimeoutError, OSError) as exc:
                # A producer that failed may hold sequence state the broker no longer
                # accepts: replace it, and send the same batch again from its start.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("publish failed, retrying: %s", self.last_error)
                await self._close_broker()
                attempt += 1
                await self.worker.pause(backoff(attempt, base=0.2, cap=3.0))
                continue
            attempt = 0
            self.last_error = None
            if sent < self.settings.relay_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.relay_poll_s)

    async def _publish_batch(self, conn: asyncpg.Connection) -> int:
        rows = await repo.outbox_batch(conn, self.settings.relay_batch)
        if not rows:
            return 0
        publishers = await self._ensure_publishers()
        started = time.monotonic()
        futures = [
            await publishers.get(r["topic"], publishers[self.settings.keys_topic]).publish(
                bytes(r["payload"]),
                topic=r["topic"],
                key=r["message_key"].encode(),
                no_confirm=True,
            )
            for r in rows
        ]
        await asyncio.gather(*futures)
        await repo.delete_outbox(conn, [r["id"] for r in rows])
        self.published += len(rows)
        log.debug("published %d key events in %.3fs", len(rows), time.monotonic() - started)
        return len(rows)

    async def _ensure_publishers(self) -> dict[str, DefaultPublisher]:
        if self._publishers is None:
            await ensure_topics(
                self.settings.kafka,
                self.settings.topics,
                prefix=self.settings.topic_prefix,
                timeout=10,
                replication=self.settings.replication,
                checked=(KEYS_EVENTS, AUDIT_EVENTS),
            )
            broker = new_broker(self.settings.kafka, self.client_id)
            publishers = {
                self.settings.keys_topic: keys_events_publisher(broker, self.settings.keys_topic),
                self.settings.audit_topic: audit_events_publisher(
                    broker, self.settings.audit_topic
                ),
            }
            self._broker = broker
            await broker.start()
            self._publishers = publishers
        return self._publishers

    async def _close_broker(self) -> None:
        broker, self._broker, self._publishers = self._broker, None, None
        if broker is not None:
            # Unsent batches expire within the request timeout; do not wait longer than that.
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(broker.stop(), 15)
