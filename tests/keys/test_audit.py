"""Audit completeness: every state-changing route leaves exactly one matching entry (type, actor,
resource, project, changes, client), in the table, in the API and on audit.events; no secret and
no key hash in any entry, topic record or log line; a change and its entry commit together."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from services.keys import audit_repository
from services.keys.audit import month_start
from shared import apikeys
from shared.events import AuditEvent, utc_now
from tests.keys.harness import ADMIN_TOKEN, PERMISSIONS, Running, bearer, dump, read_topic


@dataclass
class Call:
    """One state-changing call and the entry it must leave."""

    method: str
    path: str
    body: dict[str, Any] | None
    type: str
    resource: str
    project: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


async def test_every_change_has_exactly_one_matching_entry(
    keys: Running, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    actor = await keys.admin_key(PERMISSIONS, name="auditor")  # itself audited below
    as_actor = bearer(actor["value"])
    secrets: list[str] = [ADMIN_TOKEN, actor["value"]]

    async def call(index: int, c: Call, headers: dict[str, str] | None = None) -> Any:
        answer = await keys.client.request(
            c.method,
            c.path,
            json=c.body,
            headers=(headers or as_actor)
            | {"X-Request-Id": f"req-audit-{index}", "User-Agent": f"audit-test/{index}"},
        )
        assert answer.is_success, (c.path, answer.text)
        body: dict[str, Any] = answer.json()
        secrets.extend(body[field] for field in ("key", "value") if field in body)
        return body

    calls: list[Call] = []

    async def step(c: Call, headers: dict[str, str] | None = None) -> Any:
        calls.append(c)
        return await call(len(calls), c, headers)

    p = (
        await step(
            Call(
                "POST",
                "/v1/projects",
                {"name": "audited"},
                "project.created",
                "",
                None,
                None,
                {"name": "audited"},
            )
        )
    )["id"]
    calls[-1].resource = calls[-1].project = p
    budget = {"limit_usd": "10", "period": "month"}
    await step(
        Call(
            "PATCH",
            f"/v1/projects/{p}",
            {"name": "renamed"},
            "project.updated",
            p,
            p,
            {"name": "audited"},
            {"name": "renamed"},
        )
    )
    await step(
        Call(
            "PATCH",
            f"/v1/projects/{p}",
            {"budget": budget},
            "project.updated",
            p,
            p,
            {"budget": None},
            {"budget": budget},
        )
    )
    k1 = await step(
        Call(
            "POST", f"/v1/projects/{p}/keys", {"name": "one"}, "api_key.created", "", p, None, None
        )
    )
    k2 = await step(
        Call(
            "POST", f"/v1/projects/{p}/keys", {"name": "two"}, "api_key.created", "", p, None, None
        ),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},  # root this time
    )
    for c, k in ((calls[-2], k1), (calls[-1], k2)):
        c.resource = k["id"]
        c.after = {
            "name": k["name"],
            "rate_limits": None,
            "budget": None,
            "allowed_models": None,
            "allowed_endpoints": None,
            "is_default": k["is_default"],
            "expires_at": None,
            "hint": k["hint"],
        }
    key = f"/v1/projects/{p}/keys"
    await step(
        Call(
            "PATCH",
            f"{key}/{k1['id']}",
            {"name": "uno"},
            "api_key.updated",
            k1["id"],
            p,
            {"name": "one"},
            {"name": "uno"},
        )
    )
    limits = {"requests_per_minute": 5}
    await step(
        Call(
            "PATCH",
            f"{key}/{k1['id']}",
            {"rate_limits": limits},
            "api_key.updated",
            k1["id"],
            p,
            {"rate_limits": None},
            {"rate_limits": limits},
        )
    )
    await step(
        Call(
            "POST",
            f"{key}/{k2['id']}/default",
            None,
            "api_key.updated",
            k2["id"],
            p,
            {"is_default": False, "default_key_id": k1["id"]},
            {"is_default": True, "default_key_id": k2["id"]},
        )
    )
    rotated = await step(
        Call(
            "POST",
            f"{key}/{k1['id']}/rotate",
            {"grace_period_seconds": 0},
            "api_key.rotated",
            k1["id"],
            p,
            None,
            None,
        )
    )
    calls[-1].before = {"hint": k1["hint"], "previous_key_valid_until": None}
    calls[-1].after = {"hint": rotated["hint"], "previous_key_valid_until": None}
    await step(
        Call(
            "DELETE",
            f"{key}/{k1['id']}",
            None,
            "api_key.deleted",
            k1["id"],
            p,
            {"status": "active", "is_default": False},
            {"status": "revoked", "is_default": False},
        )
    )
    admin_body = {"name": "ops", "scope": {"project_ids": [p]}, "permissions": ["keys:read"]}
    made = await step(
        Call(
            "POST",
            "/v1/organization/admin_api_keys",
            admin_body,
            "admin_api_key.created",
            "",
            None,
            None,
            None,
        )
    )
    calls[-1].resource = made["id"]
    calls[-1].after = {
        "name": "ops",
        "hint": made["redacted_value"],
        "scope": {"project_ids": [p]},
        "permissions": ["keys:read"],
    }
    again = await step(
        Call(
            "POST",
            f"/v1/organization/admin_api_keys/{made['id']}/rotate",
            None,
            "admin_api_key.rotated",
            made["id"],
            None,
            None,
            None,
        )
    )
    calls[-1].before = {"hint": made["redacted_value"]}
    calls[-1].after = {"hint": again["redacted_value"]}
    await step(
        Call(
            "DELETE",
            f"/v1/organization/admin_api_keys/{made['id']}",
            None,
            "admin_api_key.deleted",
            made["id"],
            None,
            {"status": "active"},
            {"status": "revoked"},
        )
    )

    # Calls that change nothing, or fail, leave no entry.
    quiet = [
        ("PATCH", f"{key}/{k2['id']}", {"name": "two"}, 200),  # the same name
        ("PATCH", f"/v1/projects/{p}", {}, 200),
        ("DELETE", f"{key}/{k1['id']}", None, 409),  # revoked already
        ("POST", f"{key}/{k2['id']}/default", None, 200),  # the default already
        ("POST", f"{key}", {"name": ""}, 400),
        ("DELETE", f"/v1/organization/admin_api_keys/{made['id']}", None, 409),
        ("POST", "/v1/organization/admin_api_keys", admin_body | {"permissions": []}, 400),
    ]
    for method, path, body, status in quiet:
        answer = await keys.client.request(method, path, json=body, headers=as_actor)
        assert answer.status_code == status, (path, answer.text)

    entries = (await keys.client.get("/v1/organization/audit_logs", params={"limit": 100})).json()
    mine = [
        e for e in entries["data"] if e["request_id"] and e["request_id"].startswith("req-audit-")
    ]
    assert len(entries["data"]) == len(calls) + 1  # and the auditor key's own creation
    assert len(mine) == len(calls)
    by_request = {e["request_id"]: e for e in mine}
    for index, c in enumerate(calls, start=1):
        e = by_request[f"req-audit-{index}"]
        root = index == 5
        assert e["type"] == c.type, (index, e)
        assert e["actor"] == (
            {"type": "root", "id": "root", "hint": None}
            if root
            else {"type": "admin_key", "id": actor["id"], "hint": actor["redacted_value"]}
        )
        assert (e["resource_id"], e["project_id"]) == (c.resource, c.project), e
        assert e["changes"] == {"before": c.before, "after": c.after}, (index, e["changes"])
        assert (e["user_agent"], e["ip"]) == (f"audit-test/{index}", "127.0.0.1")
        assert e["object"] == "organization.audit_log"
    # Newest first.
    assert [e["request_id"] for e in mine] == [f"req-audit-{i}" for i in range(len(calls), 0, -1)]

    # The same entries on audit.events, keyed by project (or "organization").
    records = await read_topic(
        keys.settings.kafka_bootstrap, keys.settings.audit_topic, len(calls) + 1
    )
    events = {AuditEvent.model_validate_json(r.value).id: r for r in records}
    assert set(events) == {e["id"] for e in entries["data"]}
    for e in entries["data"]:
        event = AuditEvent.model_validate_json(events[e["id"]].value)
        assert events[e["id"]].key.decode() == (e["project_id"] or "organization")
        assert (event.type, event.resource_id, event.changes) == (
            e["type"],
            e["resource_id"],
            e["changes"],
        )

    # No secret and no key hash anywhere: entries, table, topic, logs.
    hashes = [apikeys.hash_key(s) for s in secrets]
    table = await dump(db, keys.settings.db_schema)
    places = {
        "api": json.dumps(entries),
        "table": "\n".join(table["audit_logs"]),
        "topic": "\n".join(r.value.decode() for r in records),
        "logs": "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
    }
    assert len(secrets) == 2 + 5  # the token, the actor, three API key secrets, two admin
    for where, text in places.items():
        assert "sk-tg-" not in text, where
        for value in (*secrets, *hashes):
            assert value not in text, where


async def test_a_change_and_its_entry_commit_together(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    assert await db.fetchval("SELECT count(*) FROM audit_logs") == 1  # project.created
    # With no partition for this month, the entry cannot be written: nor can the change.
    current = audit_repository.partition_name(month_start(utc_now()))
    await db.execute(f'ALTER TABLE audit_logs DETACH PARTITION "{current}"')
    answer = await keys.client.post(f"/v1/projects/{project}/keys", json={"name": "lost"})
    assert answer.status_code == 500
    assert "sk-tg-" not in answer.text
    await db.execute(f'DROP TABLE "{current}"')
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0
    assert (
        await db.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", keys.settings.keys_topic)
        == 0
    )
    # The service makes the month again (it does at start and every hour); then it works.
    await keys.app.state.partitions.maintain()
    assert (
        await keys.client.post(f"/v1/projects/{project}/keys", json={"name": "kept"})
    ).is_success
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 1
    # The one entry: the new key's (project.created went with the dropped partition).
    assert await db.fetchval("SELECT type FROM audit_logs") == "api_key.created"
