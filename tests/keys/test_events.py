"""keys.events: every change, the key's whole state, versions in order, through the outbox."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.keys import repository
from services.keys.settings import KeysSettings
from shared import apikeys
from shared.events import KeyEvent
from tests.keys.harness import Running, by_key, read_topic, running
from tests.polling import eventually


async def test_every_change_is_published_with_the_whole_state(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    a = await keys.key(project, "a", expires_at=expires.isoformat())
    b = await keys.key(project, "b")
    base = f"/v1/projects/{project}/keys"
    await keys.client.patch(f"{base}/{a['id']}", json={"name": "a2"})
    await keys.client.post(f"{base}/{b['id']}/default")
    rotated = (
        await keys.client.post(f"{base}/{a['id']}/rotate", json={"grace_period_seconds": 60})
    ).json()
    await keys.client.delete(f"{base}/{b['id']}")

    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 7)
    assert len(records) == 7
    events = by_key(records)
    history_a, history_b = events[a["id"]], events[b["id"]]
    assert [(e.type, e.version) for e in history_a] == [
        ("key.created", 1),
        ("key.updated", 2),
        ("key.default_changed", 3),
        ("key.rotated", 4),
    ]
    assert [(e.type, e.version) for e in history_b] == [
        ("key.created", 1),
        ("key.default_changed", 2),
        ("key.revoked", 3),
    ]
    # When the default moved from a to b, both new states went out.
    assert [e.is_default for e in history_a] == [True, True, False, False]
    assert [e.is_default for e in history_b] == [False, True, False]

    first, last = history_a[0], history_a[-1]
    assert (first.name, first.hint, first.project_id) == ("a", a["hint"], project)
    assert first.key_hash == apikeys.hash_key(a["key"])
    assert first.expires_at == expires
    assert last.name == "a2"
    assert last.key_hash == apikeys.hash_key(rotated["key"])
    assert last.previous_key_hash == apikeys.hash_key(a["key"])
    assert last.previous_valid_until is not None
    assert history_b[-1].status == "revoked"
    assert len({r.event.event_id for r in records}) == 7

    # The last event of each key is exactly what the verify endpoint answers.
    for key_id, secret in ((a["id"], rotated["key"]), (b["id"], b["key"])):
        state = (await keys.verify(apikeys.hash_key(secret))).json()
        assert state == events[key_id][-1].state().model_dump(mode="json")
    assert await repository.outbox_backlog(db) == 0


async def test_the_event_row_is_written_with_the_change(
    keys: Running, db: asyncpg.Connection
) -> None:
    # With the relay stopped, each change leaves exactly its messages in the outbox: the key's
    # state, and its audit log entry (keyed by the project).
    await keys.app.state.relay.stop()
    project = await keys.project()
    key = await keys.key(project)
    await keys.client.patch(f"/v1/projects/{project}/keys/{key['id']}", json={"name": "n"})
    every = await db.fetch("SELECT topic, message_key, payload FROM outbox ORDER BY id")
    audit = (keys.settings.audit_topic, project)
    assert [(r["topic"], r["message_key"]) for r in every] == [
        audit,
        *[(keys.settings.keys_topic, key["id"]), audit] * 2,
    ]
    rows = [r for r in every if r["topic"] == keys.settings.keys_topic]
    keys.app.state.relay.start()
    await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 2)
    assert [r.value for r in sorted(records, key=lambda r: r.offset)] == [
        bytes(r["payload"]) for r in rows
    ]


async def test_a_second_relay_waits_for_the_first(keys: Running, db: asyncpg.Connection) -> None:
    from services.keys.outbox import OutboxRelay

    other = OutboxRelay(keys.settings, "other")
    other.start()
    try:
        await eventually(lambda: _leader(keys), what="first relay leads")
        project = await keys.project()
        await keys.key(project)
        await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
        assert other.leader is False
        assert other.published == 0
        # When the leader stops, the other takes over.
        await keys.app.state.relay.stop()
        await eventually(lambda: _is(other), what="second relay leads")
        await keys.key(project, "later")
        await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
        assert other.published == 2  # the key's state and its audit log entry
    finally:
        await other.stop()


async def _leader(keys: Running) -> bool:
    return bool(keys.app.state.relay.leader)


async def _is(relay: object) -> bool:
    return bool(getattr(relay, "leader", False))


async def test_a_revocation_reaches_the_topic_within_a_second(
    keys_settings: KeysSettings,
) -> None:
    # The relay's poll is made slow on purpose: only the transaction's NOTIFY can be this fast.
    settings = keys_settings.model_copy(update={"relay_poll_s": 30.0})
    async with running(settings) as keys:
        project = await keys.project()
        key = await keys.key(project)
        await read_topic(settings.kafka_bootstrap, settings.keys_topic, 1)
        consumer = AIOKafkaConsumer(
            settings.keys_topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None
        )
        await consumer.start()
        try:
            await consumer.seek_to_end()
            for partition in consumer.assignment():
                await consumer.position(partition)
            assert (await keys.client.delete(f"/v1/projects/{project}/keys/{key['id']}")).is_success
            answered = time.monotonic()
            record = await asyncio.wait_for(consumer.getone(), 5)
            took = time.monotonic() - answered
        finally:
            await consumer.stop()
    event = KeyEvent.model_validate_json(record.value)
    assert (event.key_id, event.type, event.status) == (key["id"], "key.revoked", "revoked")
    assert took < 1.0
