"""GET /v1/organization/audit_logs: OpenAI's filters and cursors, a scoped reader's sight, and
the month partitions (an entry on each side of a boundary, retention dropping whole months)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from services.keys import audit_repository
from services.keys.audit import AuditContext, Partitions, entry, month_start
from shared.events import AuditActor, utc_now
from tests.keys.harness import Running, bearer

LOGS = "/v1/organization/audit_logs"


async def _page(keys: Running, **params: Any) -> dict[str, Any]:
    answer = await keys.client.get(LOGS, params=params)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


async def test_filters(keys: Running) -> None:
    p, q = await keys.project("p"), await keys.project("q")
    admin = await keys.admin_key(["keys:write"], [p])
    made = await keys.client.post(
        f"/v1/projects/{p}/keys", json={"name": "k"}, headers=bearer(admin["value"])
    )
    key = made.json()
    await keys.key(q, "other")
    everything = (await _page(keys, limit=100))["data"]
    assert [e["type"] for e in everything] == [
        "api_key.created",
        "api_key.created",
        "admin_api_key.created",
        "project.created",
        "project.created",
    ]

    def ids(page: dict[str, Any]) -> list[str]:
        return [e["resource_id"] for e in page["data"]]

    assert ids(await _page(keys, **{"project_ids[]": [p]})) == [key["id"], p]
    assert len((await _page(keys, **{"project_ids[]": [p, q]}))["data"]) == 4
    assert ids(await _page(keys, **{"event_types[]": ["admin_api_key.created"]})) == [admin["id"]]
    assert ids(await _page(keys, **{"actor_ids[]": [admin["id"]]})) == [key["id"]]
    assert len((await _page(keys, **{"actor_ids[]": ["root"]}))["data"]) == 4
    assert ids(await _page(keys, **{"resource_ids[]": [q, key["id"]]})) == [key["id"], q]
    newest = everything[0]["effective_at"]
    # Whole seconds, as entries show them: "after T" starts at T + 1, "up to T" holds all of T.
    assert len((await _page(keys, **{"effective_at[gt]": newest}))["data"]) == 0
    assert len((await _page(keys, **{"effective_at[gte]": newest}))["data"]) >= 1
    assert len((await _page(keys, **{"effective_at[lte]": newest}))["data"]) == 5
    assert len((await _page(keys, **{"effective_at[lt]": newest - 3600}))["data"]) == 0
    oldest = everything[-1]["effective_at"]
    assert len((await _page(keys, **{"effective_at[gte]": oldest}))["data"]) == 5
    assert (
        len(
            (await _page(keys, **{"effective_at[gt]": oldest - 1, "effective_at[lt]": newest + 1}))[
                "data"
            ]
        )
        == 5
    )

    for bad, param in (
        ({"event_types[]": ["key.stolen"]}, "event_types[]"),
        ({"effective_at[gt]": "yesterday"}, "effective_at[gt]"),
        ({"project_ids[]": ["proj_x"] * 101}, "project_ids[]"),
        ({"actor_ids[]": ["x" * 200]}, "actor_ids[]"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"after": "audit_log-nope"}, "after"),
        ({"before": "audit_log-nope"}, "before"),
    ):
        answer = await keys.client.get(LOGS, params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["param"] == param, answer.text


async def test_cursors_page_both_ways(keys: Running) -> None:
    for i in range(7):
        await keys.project(f"p{i}")
    everything = [e["id"] for e in (await _page(keys, limit=100))["data"]]
    assert len(everything) == 7
    seen: list[str] = []
    page = await _page(keys, limit=3)
    while True:
        seen += [e["id"] for e in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        page = await _page(keys, limit=3, after=page["last_id"])
    assert seen == everything
    # Back from the end: the page just newer than the cursor, newest first.
    back = await _page(keys, limit=3, before=everything[5])
    assert [e["id"] for e in back["data"]] == everything[2:5]
    assert back["has_more"] is True
    first = await _page(keys, limit=3, before=everything[2])
    assert [e["id"] for e in first["data"]] == everything[0:2]
    assert first["has_more"] is False


async def test_a_project_scoped_reader_sees_its_projects_only(keys: Running) -> None:
    p, q = await keys.project("p"), await keys.project("q")
    await keys.key(p, "kp")
    await keys.key(q, "kq")
    reader = await keys.admin_key(["audit:read"], [p])
    as_reader = bearer(reader["value"])
    seen = (await keys.client.get(LOGS, headers=as_reader)).json()["data"]
    assert {e["project_id"] for e in seen} == {p}
    assert len(seen) == 2
    # Asking for another project's entries finds none; a cursor from there is unknown.
    other = (await keys.client.get(LOGS, params={"project_ids[]": [q]}, headers=as_reader)).json()
    assert other["data"] == []
    hidden = (await _page(keys, **{"project_ids[]": [q]}))["data"][0]["id"]
    answer = await keys.client.get(LOGS, params={"after": hidden}, headers=as_reader)
    assert answer.status_code == 400
    # Without audit:read: 403 naming it.
    writer = await keys.admin_key(["keys:read"])
    answer = await keys.client.get(LOGS, headers=bearer(writer["value"]))
    assert answer.status_code == 403
    assert "'audit:read'" in answer.json()["error"]["message"]


async def test_entries_land_in_their_month_and_retention_drops_whole_months(
    keys: Running, db: asyncpg.Connection
) -> None:
    boundary = month_start(utc_now(), 1)  # the next month's first instant (made ahead)
    context = AuditContext(actor=AuditActor(type="root", id="root"))
    project = await keys.project()
    sides = {
        "before": boundary - timedelta(microseconds=1),
        "at": boundary,
    }
    made: dict[str, str] = {}
    for side, moment in sides.items():
        event = entry(
            context,
            "project.updated",
            project_id=project,
            resource_id=project,
            before={"name": "a"},
            after={"name": side},
            now=moment,
        )
        await audit_repository.insert_entry(db, event)
        made[side] = event.id
    rows = await db.fetch(
        "SELECT id, tableoid::regclass::text AS part FROM audit_logs WHERE id = ANY($1)",
        list(made.values()),
    )
    placed: dict[str, str] = {r["id"]: r["part"] for r in rows}
    assert placed[made["before"]].endswith(audit_repository.partition_name(month_start(utc_now())))
    assert placed[made["at"]].endswith(audit_repository.partition_name(boundary))
    # effective_at[lt] the boundary: the earlier side only; [gte]: the later one.
    edge = int(boundary.timestamp())
    found = await _page(keys, **{"effective_at[lt]": edge, "resource_ids[]": [project]})
    assert made["before"] in [e["id"] for e in found["data"]]
    assert made["at"] not in [e["id"] for e in found["data"]]
    later = await _page(keys, **{"effective_at[gte]": edge, "resource_ids[]": [project]})
    assert [e["id"] for e in later["data"]] == [made["at"]]

    # Retention of one month, a month from now: this month's partition is dropped whole.
    partitions = Partitions(keys.app.state.pool, months_ahead=3, retention_months=1)
    created, dropped = await partitions.maintain(now=month_start(utc_now(), 2))
    assert dropped == [audit_repository.partition_name(month_start(utc_now()))]
    assert created == [audit_repository.partition_name(month_start(utc_now(), i)) for i in (4, 5)]
    left = await db.fetch("SELECT id FROM audit_logs WHERE resource_id = $1", project)
    assert [r["id"] for r in left] == [made["at"]]
    names = await audit_repository.partitions(db)
    assert names == [
        audit_repository.partition_name(month_start(utc_now(), i)) for i in range(1, 6)
    ]
