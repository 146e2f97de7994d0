"""Projects and keys through the management API, on the real PostgreSQL (and Kafka relay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from shared import apikeys
from tests.keys.harness import Running

KEY_FIELDS = {
    "object",
    "id",
    "project_id",
    "name",
    "hint",
    "status",
    "is_default",
    "created_at",
    "last_used_at",
    "expires_at",
    "rotated_at",
    "previous_key_valid_until",
    "revoked_at",
    "rate_limits",
    "budget",
    "allowed_models",
    "allowed_endpoints",
}


async def test_projects_create_list_get(keys: Running) -> None:
    created = await keys.client.post("/v1/projects", json={"name": "  Research  "})
    assert created.status_code == 201
    project = created.json()
    assert project["object"] == "project"
    assert project["name"] == "Research"
    assert project["id"].startswith("proj_")
    assert abs(project["created_at"] - datetime.now(UTC).timestamp()) < 60

    other = await keys.project("Other")
    listed = (await keys.client.get("/v1/projects")).json()
    assert listed["object"] == "list"
    assert [p["id"] for p in listed["data"]] == [project["id"], other]
    assert listed["has_more"] is False
    assert (await keys.client.get(f"/v1/projects/{project['id']}")).json() == project


async def test_projects_page_with_limit_and_after(keys: Running) -> None:
    ids = [await keys.project(f"p{i}") for i in range(5)]
    first = (await keys.client.get("/v1/projects", params={"limit": 2})).json()
    assert [p["id"] for p in first["data"]] == ids[:2]
    assert first["has_more"] is True
    assert first["last_id"] == ids[1]
    rest = (
        await keys.client.get("/v1/projects", params={"limit": 10, "after": first["last_id"]})
    ).json()
    assert [p["id"] for p in rest["data"]] == ids[2:]
    assert rest["has_more"] is False


async def test_create_key_shows_the_secret_once(keys: Running) -> None:
    project = await keys.project()
    expires = datetime.now(UTC) + timedelta(days=30)
    answer = await keys.client.post(
        f"/v1/projects/{project}/keys",
        json={"name": " production-app ", "expires_at": expires.isoformat()},
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    created = answer.json()
    secret = created["key"]
    assert apikeys.is_well_formed(secret)
    assert secret.startswith("sk-tg-")
    assert created["hint"] == f"sk-...{secret[-4:]}"
    assert created["name"] == "production-app"
    assert created["status"] == "active"
    assert created["is_default"] is True  # the project's first key
    assert created["expires_at"] == int(expires.timestamp())
    assert created["id"].startswith("key_")
    assert set(created) == KEY_FIELDS | {"key"}

    got = (await keys.client.get(f"/v1/projects/{project}/keys/{created['id']}")).json()
    listed = (await keys.client.get(f"/v1/projects/{project}/keys")).json()
    assert set(got) == KEY_FIELDS
    assert listed["data"] == [got]
    assert got == {k: v for k, v in created.items() if k != "key"}
    for text in (
        (await keys.client.get(f"/v1/projects/{project}/keys/{created['id']}")).text,
        (await keys.client.get(f"/v1/projects/{project}/keys")).text,
    ):
        assert secret not in text
        assert apikeys.hash_key(secret) not in text


async def test_expires_at_as_unix_seconds(keys: Running) -> None:
    project = await keys.project()
    at = int(datetime.now(UTC).timestamp()) + 3600
    created = await keys.key(project, expires_at=at)
    assert created["expires_at"] == at


async def test_expired_key_shows_as_expired_and_cannot_become_default(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    await keys.key(project, "first")
    key = await keys.key(project, "soon", expires_at=int(datetime.now(UTC).timestamp()) + 3600)
    await db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = $1", key["id"]
    )
    got = (await keys.client.get(f"/v1/projects/{project}/keys/{key['id']}")).json()
    assert got["status"] == "expired"
    for path in ("default", "rotate"):
        answer = await keys.client.post(f"/v1/projects/{project}/keys/{key['id']}/{path}")
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "key_expired"


async def test_set_default_moves_it(keys: Running) -> None:
    project = await keys.project()
    a = await keys.key(project, "a")
    b = await keys.key(project, "b")
    assert (a["is_default"], b["is_default"]) == (True, False)

    moved = await keys.client.post(f"/v1/projects/{project}/keys/{b['id']}/default")
    assert moved.status_code == 200
    assert moved.json()["is_default"] is True
    listed = (await keys.client.get(f"/v1/projects/{project}/keys")).json()["data"]
    assert {k["id"]: k["is_default"] for k in listed} == {a["id"]: False, b["id"]: True}
    again = await keys.client.post(f"/v1/projects/{project}/keys/{b['id']}/default")
    assert again.status_code == 200
    assert again.json()["is_default"] is True


async def test_rename(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project, "old")
    renamed = await keys.client.patch(
        f"/v1/projects/{project}/keys/{key['id']}", json={"name": "  new name "}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "new name"
    got = (await keys.client.get(f"/v1/projects/{project}/keys/{key['id']}")).json()
    assert got["name"] == "new name"
    assert got["hint"] == key["hint"]


async def test_rotate_without_grace_replaces_the_secret_at_once(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project)
    answer = await keys.client.post(f"/v1/projects/{project}/keys/{key['id']}/rotate")
    assert answer.status_code == 200
    rotated = answer.json()
    assert rotated["id"] == key["id"]
    assert apikeys.is_well_formed(rotated["key"])
    assert rotated["key"] != key["key"]
    assert rotated["hint"] == f"sk-...{rotated['key'][-4:]}"
    assert rotated["previous_key_valid_until"] is None
    assert rotated["rotated_at"] is not None
    assert rotated["is_default"] is True

    assert (await keys.verify(apikeys.hash_key(key["key"]))).status_code == 404
    state = (await keys.verify(apikeys.hash_key(rotated["key"]))).json()
    assert state["key_id"] == key["id"]
    assert state["previous_key_hash"] is None


async def test_rotate_with_grace_keeps_the_old_secret_for_a_while(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    key = await keys.key(project)
    rotated = (
        await keys.client.post(
            f"/v1/projects/{project}/keys/{key['id']}/rotate", json={"grace_period_seconds": 3600}
        )
    ).json()
    until = rotated["previous_key_valid_until"]
    assert abs(until - (datetime.now(UTC).timestamp() + 3600)) < 60

    old, new = apikeys.hash_key(key["key"]), apikeys.hash_key(rotated["key"])
    for key_hash in (old, new):
        answer = await keys.verify(key_hash)
        assert answer.status_code == 200
        state = answer.json()
        assert (state["key_hash"], state["previous_key_hash"]) == (new, old)
        assert state["version"] == 2
    # Once the grace period is over, the old secret is unknown.
    await db.execute("UPDATE api_keys SET previous_valid_until = now() - interval '1 s'")
    assert (await keys.verify(old)).status_code == 404
    assert (await keys.verify(new)).status_code == 200


async def test_revoke_stops_the_key_for_good(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project)
    revoked = await keys.client.delete(f"/v1/projects/{project}/keys/{key['id']}")
    assert revoked.status_code == 200
    assert revoked.json() == {"object": "project.api_key.deleted", "id": key["id"], "deleted": True}

    got = (await keys.client.get(f"/v1/projects/{project}/keys/{key['id']}")).json()
    assert got["status"] == "revoked"
    assert got["is_default"] is False
    assert got["revoked_at"] is not None
    state = (await keys.verify(apikeys.hash_key(key["key"]))).json()
    assert (state["status"], state["is_default"]) == ("revoked", False)
    for action in ("rotate", "default"):
        answer = await keys.client.post(f"/v1/projects/{project}/keys/{key['id']}/{action}")
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "key_revoked"


async def test_revoked_keys_are_listed_only_when_asked(keys: Running) -> None:
    project = await keys.project()
    kept = await keys.key(project, "kept")
    gone = await keys.key(project, "gone")
    await keys.client.delete(f"/v1/projects/{project}/keys/{gone['id']}")
    plain = (await keys.client.get(f"/v1/projects/{project}/keys")).json()["data"]
    assert [k["id"] for k in plain] == [kept["id"]]
    every = (
        await keys.client.get(f"/v1/projects/{project}/keys", params={"include_revoked": "true"})
    ).json()["data"]
    assert [(k["id"], k["status"]) for k in every] == [
        (kept["id"], "active"),
        (gone["id"], "revoked"),
    ]


async def test_keys_page_with_limit_and_after(keys: Running) -> None:
    project = await keys.project()
    ids = [(await keys.key(project, f"k{i}"))["id"] for i in range(5)]
    first = (await keys.client.get(f"/v1/projects/{project}/keys", params={"limit": 3})).json()
    assert [k["id"] for k in first["data"]] == ids[:3]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[0], ids[2], True)
    rest = (
        await keys.client.get(f"/v1/projects/{project}/keys", params={"after": first["last_id"]})
    ).json()
    assert [k["id"] for k in rest["data"]] == ids[3:]
    assert rest["has_more"] is False


async def test_a_key_under_another_project_is_not_found(keys: Running) -> None:
    mine, theirs = await keys.project("mine"), await keys.project("theirs")
    key = await keys.key(theirs)
    base = f"/v1/projects/{mine}/keys/{key['id']}"
    calls = [
        keys.client.get(base),
        keys.client.patch(base, json={"name": "x"}),
        keys.client.delete(base),
        keys.client.post(f"{base}/default"),
        keys.client.post(f"{base}/rotate"),
    ]
    for call in calls:
        answer = await call
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    assert (await keys.client.get(f"/v1/projects/{mine}/keys")).json()["data"] == []
    still = (await keys.client.get(f"/v1/projects/{theirs}/keys/{key['id']}")).json()
    assert (still["name"], still["status"], still["hint"]) == ("key", "active", key["hint"])


async def test_docs_and_health(keys: Running) -> None:
    assert (await keys.client.get("/docs", headers={})).status_code == 200
    schema = (await keys.client.get("/openapi.json")).json()
    assert "/v1/projects/{project_id}/keys/{key_id}/rotate" in schema["paths"]
    assert (await keys.client.get("/healthz", headers={})).json() == {"status": "ok"}
    ready = await keys.client.get("/readyz", headers={})
    assert ready.status_code == 200
    # Nothing was changed here, so nothing waits in the outbox (a count, not a placeholder).
    assert ready.json()["outbox_backlog"] == 0
