"""At most one default key per project, enforced by the database, under racing calls."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.keys.harness import Running, by_key, read_topic


async def test_50_concurrent_set_default_calls_leave_exactly_one_default(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    ids = [(await keys.key(project, f"k{i}"))["id"] for i in range(50)]

    answers = await asyncio.gather(
        *(keys.client.post(f"/v1/projects/{project}/keys/{k}/default") for k in ids)
    )
    assert [a.status_code for a in answers] == [200] * 50
    defaults = await db.fetch(
        "SELECT id FROM api_keys WHERE project_id = $1 AND is_default", project
    )
    assert len(defaults) == 1
    listed = (await keys.client.get(f"/v1/projects/{project}/keys", params={"limit": 100})).json()
    assert [k["id"] for k in listed["data"] if k["is_default"]] == [defaults[0]["id"]]

    # Every key's last event agrees with the database: one default on the topic too.
    events = by_key(await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 99))
    last = {key_id: history[-1] for key_id, history in events.items()}
    assert set(last) == set(ids)
    assert [k for k, e in last.items() if e.is_default] == [defaults[0]["id"]]
    for history in events.values():
        assert [e.version for e in history] == list(range(1, len(history) + 1))


async def test_the_database_refuses_a_second_default(keys: Running, db: asyncpg.Connection) -> None:
    project = await keys.project()
    await keys.key(project, "a")
    b = await keys.key(project, "b")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("UPDATE api_keys SET is_default = true WHERE id = $1", b["id"])


async def test_a_revoked_default_leaves_the_project_without_one(keys: Running) -> None:
    project = await keys.project()
    a = await keys.key(project, "a")
    b = await keys.key(project, "b")
    await keys.client.delete(f"/v1/projects/{project}/keys/{a['id']}")
    listed = (await keys.client.get(f"/v1/projects/{project}/keys")).json()["data"]
    assert [(k["id"], k["is_default"]) for k in listed] == [(b["id"], False)]
    c = await keys.key(project, "c")  # a project without a default gets its next key as one
    assert c["is_default"] is True
