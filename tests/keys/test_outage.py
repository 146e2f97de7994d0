"""The outbox across a broker outage: the API keeps working, events go out in order, none lost."""

from __future__ import annotations

import time

import asyncpg
import pytest

from deploy.stack import Endpoints
from services.keys import repository
from tests.keys.harness import by_key, make_settings, read_topic, running
from tests.polling import eventually
from tests.private_servers import Private


@pytest.mark.slow
async def test_events_survive_a_broker_outage_in_order(
    private_kafka: Private,
    endpoints: Endpoints,
    pg_schema: str,
    unique: str,
    db: asyncpg.Connection,
) -> None:
    settings = make_settings(
        kafka=private_kafka.kafka_bootstrap,
        database_url=endpoints.database_url,
        schema=pg_schema,
        prefix=f"outage-{unique}.",
        group=f"keys-last-used-{unique}",
        consume_usage=True,  # its consumer retries through the outage too
    )
    async with running(settings) as keys:
        project = await keys.project()
        first = await keys.key(project, "before")
        await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0, timeout=30)

        await private_kafka.astop()
        started = time.monotonic()
        base = f"/v1/projects/{project}/keys"
        created = [await keys.key(project, f"during-{i}") for i in range(10)]
        await keys.client.patch(f"{base}/{first['id']}", json={"name": "renamed"})
        for key in created:
            assert (await keys.client.post(f"{base}/{key['id']}/default")).status_code == 200
        assert (await keys.client.post(f"{base}/{first['id']}/rotate")).status_code == 200
        assert (await keys.client.delete(f"{base}/{created[3]['id']}")).status_code == 200
        # Every call answered at once, with nothing reaching Kafka.
        assert time.monotonic() - started < 10
        backlog = await repository.outbox_backlog(db)
        # created, renamed, ten default moves (old and new default each), rotated, revoked
        key_events = 10 + 1 + 2 * 10 + 1 + 1
        # and one audit log entry per change
        assert backlog == key_events + 10 + 1 + 10 + 1 + 1
        ready = (await keys.client.get("/readyz")).json()
        assert ready["outbox_backlog"] == backlog

        await private_kafka.astart()
        await eventually(
            lambda: repository.outbox_backlog(db), until=lambda n: n == 0, timeout=90, what="drain"
        )
        records = await read_topic(
            private_kafka.kafka_bootstrap, settings.keys_topic, 1 + key_events
        )

    rows = await db.fetch("SELECT id, version FROM api_keys")
    expected = {r["id"]: r["version"] for r in rows}
    events = by_key(records)
    assert set(events) == set(expected)
    for key_id, history in events.items():
        # At least once: a retried batch may repeat, but the versions appear first in order,
        # none is missing, and the last message of each key is its newest state.
        versions = [e.version for e in history]
        firsts = list(dict.fromkeys(versions))
        assert firsts == list(range(1, expected[key_id] + 1)), (key_id, versions)
        assert versions[-1] == expected[key_id]
