"""An internal team's subscriber: react to every revoked Tollgate key. Copy it and edit ``react``.

It reads ``keys.events`` (docs/events.md) in a consumer group of its own, from the earliest
offset: the topic is compacted and every message is a key's whole state, so a new group first
sees the latest state of every key (each key revoked so far among them), then every change as
it happens. Only ``key.revoked`` is acted on; the other types are read and passed over.

Ack policy ``ACK``: the offset is committed after the handler returned, so a crash mid-handler
delivers the record again (at least once; the same revocation can also come twice, so the
reaction must be idempotent, e.g. keyed by ``key_id``). A handler that raises is logged by
FastStream and its record committed all the same: no record can stall the group. A team that
must retry a failed reaction uses ``AckPolicy.NACK_ON_ERROR`` (the record is read again), and
then its handler must never fail for good on one record.

Run it: ``TOLLGATE_KAFKA_BOOTSTRAP=127.0.0.1:19092 uv run python -m examples.revoked_keys``
(``TOLLGATE_TOPIC_PREFIX`` as the services use it; ``TOLLGATE_REVOKED_KEYS_GROUP`` for the
group).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from pydantic_settings import SettingsConfigDict

from shared.events import KeyEvent
from shared.settings import ServiceSettings
from shared.topics import KEYS_EVENTS, topic_name

log = logging.getLogger("revoked_keys")

OnRevoked = Callable[[KeyEvent], Awaitable[None]]


class Settings(ServiceSettings):
    """``TOLLGATE_KAFKA_BOOTSTRAP`` (and the ``TOLLGATE_KAFKA_*`` security settings: TLS,
    SASL), ``TOLLGATE_TOPIC_PREFIX``, ``TOLLGATE_REVOKED_KEYS_GROUP``."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore", frozen=True)

    revoked_keys_group: str = "revoked-keys-example"


async def react(event: KeyEvent) -> None:
    """What to do about a revoked key: here, a log line (a hint, never a secret, is on it)."""
    log.info(
        "key %s of project %s (%s) revoked at %s",
        event.key_id,
        event.project_id,
        event.hint,
        event.occurred_at.isoformat(),
    )


def create_app(settings: Settings | None = None, on_revoked: OnRevoked = react) -> FastStream:
    """The app: one subscriber on keys.events that hands each revoked key to on_revoked."""
    settings = settings or Settings()
    # FastStream takes a string as one server: give it the list of a comma-separated setting.
    security, options = settings.kafka.broker_security()
    broker = KafkaBroker(settings.kafka.servers, security=security, **options)

    @broker.subscriber(
        topic_name(KEYS_EVENTS, settings.topic_prefix),
        group_id=settings.revoked_keys_group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )
    async def on_key_event(event: KeyEvent) -> None:
        if event.type == "key.revoked":
            await on_revoked(event)

    return FastStream(broker)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(create_app().run())
