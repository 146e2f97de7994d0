"""last_used_at follows usage.events (own consumer group), in batches, never moving back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from services.keys.settings import KeysSettings
from shared.events import UsageRecorded
from tests.keys.harness import Running, running
from tests.polling import eventually


def usage(key_id: str, project_id: str, at: datetime) -> bytes:
    return UsageRecorded(
        occurred_at=at,
        request_id=f"req_{uuid.uuid4().hex}",
        project_id=project_id,
        key_id=key_id,
        model="test/chat",
        endpoint="/v1/chat/completions",
        input_tokens=3,
        output_tokens=5,
        status_code=200,
        latency_ms=12,
    ).to_bytes()


async def test_last_used_at_follows_usage_events(keys_settings: KeysSettings) -> None:
    async with running(keys_settings.model_copy(update={"consume_usage": True})) as keys:
        await _last_used_at_follows_usage_events(keys)


async def _last_used_at_follows_usage_events(keys: Running) -> None:
    project = await keys.project()
    used, unused = await keys.key(project, "used"), await keys.key(project, "unused")
    assert used["last_used_at"] is None
    now = datetime.now(UTC).replace(microsecond=0)
    producer = AIOKafkaProducer(bootstrap_servers=keys.settings.kafka_bootstrap)
    await producer.start()
    try:
        topic = keys.settings.usage_topic
        # Many requests in a burst: the latest one wins, in few database updates.
        for seconds in range(300):
            at = now - timedelta(minutes=10) + timedelta(seconds=seconds)
            await producer.send(topic, usage(used["id"], project, at), key=used["id"].encode())
        await producer.send(topic, b"not json at all", key=b"x")
        await producer.send(topic, usage("key_unknown", project, now), key=b"key_unknown")
        await producer.flush()
        latest = int((now - timedelta(minutes=10) + timedelta(seconds=299)).timestamp())

        async def last_used() -> int | None:
            got = (await keys.client.get(f"/v1/projects/{project}/keys/{used['id']}")).json()
            value: int | None = got["last_used_at"]
            return value

        await eventually(last_used, until=lambda v: v == latest, timeout=30, what="last_used_at")
        consumer = keys.app.state.consumer
        assert consumer.updated < 300  # batched: far fewer updates than events

        # An older event (a late or replayed one) never moves it back; a newer one moves it on.
        older = now - timedelta(hours=1)
        await producer.send_and_wait(topic, usage(used["id"], project, older))
        newer = now - timedelta(seconds=5)
        await producer.send_and_wait(topic, usage(used["id"], project, newer))
        await eventually(last_used, until=lambda v: v == int(newer.timestamp()), timeout=30)
        # A time in the future is taken as now at most.
        await producer.send_and_wait(
            topic, usage(used["id"], project, datetime.now(UTC) + timedelta(days=1))
        )
        await eventually(
            last_used,
            until=lambda v: (
                v is not None and int(newer.timestamp()) < v <= int(datetime.now(UTC).timestamp())
            ),
            timeout=30,
        )
    finally:
        await producer.stop()
    other = (await keys.client.get(f"/v1/projects/{project}/keys/{unused['id']}")).json()
    assert other["last_used_at"] is None


T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
S0 = int(T0.timestamp())


async def test_last_use_of_each_key_ignores_late_older_events(keys_settings: KeysSettings) -> None:
    """Moved from metering's ``/usage/keys`` (metering derived "last used" too, and no longer
    does): the same events, read where users read it, on the key list."""
    async with running(keys_settings.model_copy(update={"consume_usage": True})) as keys:
        project, other = await keys.project(), await keys.project("other")
        one, two, three = [(await keys.key(project, n))["id"] for n in ("one", "two", "three")]
        nine = (await keys.key(other, "nine"))["id"]
        sends = [
            (one, project, T0 + timedelta(seconds=5)),
            (one, project, T0 + timedelta(seconds=50)),
            (two, project, T0 + timedelta(minutes=1, seconds=10)),
            (one, project, T0 + timedelta(minutes=90)),
            (two, project, T0 + timedelta(hours=14)),
            (nine, other, T0 + timedelta(seconds=1)),
            # Produced last, stamped early: it must not move key two's last use back.
            (two, project, T0 + timedelta(seconds=30)),
        ]
        producer = AIOKafkaProducer(bootstrap_servers=keys.settings.kafka_bootstrap)
        await producer.start()
        try:
            topic = keys.settings.usage_topic
            for key_id, project_id, at in sends:
                await producer.send(topic, usage(key_id, project_id, at), key=two.encode())
            # Behind the late event on its partition: once it shows, the late one was applied.
            at = T0 + timedelta(hours=1)
            await producer.send_and_wait(topic, usage(three, project, at), key=two.encode())
        finally:
            await producer.stop()

        async def listed() -> dict[str, int | None]:
            answer = await keys.client.get(f"/v1/projects/{project}/keys")
            return {k["id"]: k["last_used_at"] for k in answer.json()["data"]}

        got = await eventually(listed, until=lambda v: v[three] is not None, timeout=30)
        assert got == {one: S0 + 90 * 60, two: S0 + 14 * 3600, three: S0 + 3600}
        answer = await keys.client.get(f"/v1/projects/{other}/keys/{nine}")
        assert answer.json()["last_used_at"] == S0 + 1
