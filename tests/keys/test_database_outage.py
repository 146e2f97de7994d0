"""PostgreSQL away: the API answers 503 in OpenAI's shape at once, and recovers by itself."""

from __future__ import annotations

import time

import pytest

from deploy.stack import Endpoints
from services.keys import repository
from tests.keys.harness import make_settings, read_topic, running
from tests.polling import eventually
from tests.private_servers import Private


@pytest.mark.slow
async def test_a_database_outage_is_a_503_and_passes(
    private_postgres: Private, endpoints: Endpoints, unique: str, topic_prefix: str
) -> None:
    settings = make_settings(
        kafka=endpoints.kafka_bootstrap,
        database_url=private_postgres.database_url,
        schema="keys",
        prefix=topic_prefix,
        group=f"keys-last-used-{unique}",
    )
    async with running(settings) as keys:
        project = await keys.project()
        await keys.key(project, "before")

        await private_postgres.astop()
        started = time.monotonic()
        for answer in (
            await keys.client.post(f"/v1/projects/{project}/keys", json={"name": "during"}),
            await keys.client.get(f"/v1/projects/{project}/keys"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "service_unavailable"
        assert time.monotonic() - started < 10
        assert (await keys.client.get("/readyz")).status_code == 503
        assert (await keys.client.get("/healthz")).status_code == 200

        await private_postgres.astart()

        async def create() -> int:
            answer = await keys.client.post(f"/v1/projects/{project}/keys", json={"name": "after"})
            return answer.status_code

        await eventually(create, until=lambda s: s == 201, timeout=30, what="recovery")
        listed = (await keys.client.get(f"/v1/projects/{project}/keys")).json()["data"]
        assert [k["name"] for k in listed] == ["before", "after"]
        # The relay reconnected too: the new key's event is published.
        await eventually(
            lambda: repository.outbox_backlog(keys.app.state.pool), until=lambda n: n == 0
        )
        records = await read_topic(settings.kafka_bootstrap, settings.keys_topic, 2)
        # At least once: "before" is sent again if the outage hit between send and delete.
        events = {r.event.event_id: r.event.name for r in records}
        assert sorted(events.values()) == ["after", "before"]
