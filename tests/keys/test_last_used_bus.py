"""The last_used consumer on FastStream: headers it cannot decode never stall it, and a batch
that fails is read again from the committed offsets, not skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from services.keys.settings import KeysSettings
from tests.keys.harness import Running, running
from tests.keys.test_last_used import usage
from tests.metering.poison import letters_by_group
from tests.polling import eventually


async def _last_used(keys: Running, project_id: str, key_id: str) -> int | None:
    got = (await keys.client.get(f"/v1/projects/{project_id}/keys/{key_id}")).json()
    value: int | None = got["last_used_at"]
    return value


async def test_headers_that_are_not_utf8_or_null_do_not_stall_it(
    keys_settings: KeysSettings,
) -> None:
    settings = keys_settings.model_copy(update={"consume_usage": True, "last_used_batch": 50})
    async with running(settings) as keys:
        project = await keys.project("headers")
        key = await keys.key(project, "a")
        now = datetime.now(UTC).replace(microsecond=0)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            key_id = key["id"].encode()
            # FastStream's own parser decodes every header as UTF-8: each of these would
            # fail it before any handler ran.
            await producer.send_and_wait(
                settings.usage_topic,
                usage(key["id"], project, now - timedelta(minutes=3)),
                key=key_id,
                headers=[("content-type", b"\xff\xfe")],
            )
            await producer.send_and_wait(
                settings.usage_topic,
                b"{not json",
                key=key_id,
                headers=[("content-type", b"application/json"), ("trace", None)],
            )
            last = now - timedelta(minutes=1)
            await producer.send_and_wait(
                settings.usage_topic,
                usage(key["id"], project, last),
                key=key_id,
                headers=[("x", None)],
            )
        finally:
            await producer.stop()
        want = int(last.timestamp())
        await eventually(
            lambda: _last_used(keys, project, key["id"]),
            until=lambda v: v == want,
            timeout=30,
            what="last_used_at past the records with odd headers",
        )
        group = settings.consumer_group
        letters = await letters_by_group(
            settings.kafka_bootstrap, settings.topic_prefix, {group: 1}
        )
        (letter,) = letters[group].values()
        assert "invalid usage event" in letter.reason, letter.reason


async def test_a_failed_batch_is_read_again_not_skipped(
    keys_settings: KeysSettings, db: asyncpg.Connection
) -> None:
    settings = keys_settings.model_copy(update={"consume_usage": True, "last_used_batch": 50})
    async with running(settings) as keys:
        project = await keys.project("retry")
        key = await keys.key(project, "a")
        # The update fails with an error no record causes (the table is away): the batch
        # must come again once it is back, not be committed past.
        await db.execute("ALTER TABLE api_keys RENAME TO api_keys_away")
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.usage_topic, usage(key["id"], project, at), key=key["id"].encode()
            )
        finally:
            await producer.stop()

        async def restarts() -> int:
            health = (await keys.client.get("/readyz")).json()
            value: int = health["workers"]["keys-last-used"]["restarts"]
            return value

        await eventually(restarts, until=lambda n: n >= 1, timeout=30, what="a failed batch")
        await db.execute("ALTER TABLE api_keys_away RENAME TO api_keys")
        await eventually(
            lambda: _last_used(keys, project, key["id"]),
            until=lambda v: v == int(at.timestamp()),
            timeout=30,
            what="the failed batch applied after the table came back",
        )
        ready = (await keys.client.get("/readyz")).json()
        assert ready["last_used_dead_letters"] == 0, ready
