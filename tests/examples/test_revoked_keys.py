"""examples/revoked_keys.py against the real broker: it reacts to the revoked key only."""

from __future__ import annotations

from datetime import UTC, datetime

from deploy.stack import Endpoints
from examples.revoked_keys import Settings, create_app
from shared import apikeys
from shared.events import KeyEvent
from shared.ids import resource_id
from shared.kafka import idempotent_producer
from shared.topics import KEYS_EVENTS, topic_name
from tests.polling import eventually


def _key_event(key_id: str, project_id: str, secret: str, **fields: object) -> KeyEvent:
    return KeyEvent.model_validate(
        {
            "type": "key.created",
            "occurred_at": datetime.now(UTC),
            "key_id": key_id,
            "project_id": project_id,
            "name": "production-app",
            "hint": apikeys.hint(secret),
            "key_hash": apikeys.hash_key(secret),
            "version": 1,
        }
        | fields
    )


async def test_reacts_to_exactly_the_revoked_key(
    endpoints: Endpoints, topic_prefix: str, unique: str
) -> None:
    key_id, project_id, secret = resource_id("key"), resource_id("proj"), apikeys.generate()
    created = _key_event(key_id, project_id, secret)
    revoked = _key_event(
        key_id, project_id, secret, type="key.revoked", status="revoked", version=2
    )
    # Published before the app starts, as the key service's relay does (key id as the key):
    # the app's new group must read them from the earliest offset.
    producer = idempotent_producer(endpoints.kafka_bootstrap, "test-revoked-keys")
    await producer.start()
    try:
        topic = topic_name(KEYS_EVENTS, topic_prefix)
        for event in (created, revoked):
            await producer.send_and_wait(topic, event.to_bytes(), key=key_id.encode())
    finally:
        await producer.stop()

    seen: list[KeyEvent] = []

    async def on_revoked(event: KeyEvent) -> None:
        seen.append(event)

    settings = Settings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        topic_prefix=topic_prefix,
        revoked_keys_group=f"test-{unique}-revoked-keys",
    )
    async with create_app(settings, on_revoked):

        async def probe() -> list[KeyEvent]:
            return seen

        await eventually(probe, timeout=30, what="the revoked key handled")
    # One key, one partition: the created event was read (and passed over) before the revoked.
    assert seen == [revoked]
