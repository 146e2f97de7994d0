"""Admin keys: OpenAI's shapes, the secret shown once, rotation and revocation at once, least
privilege when one admin key makes another, and bad bodies refused naming the field."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from shared import apikeys
from tests.keys.harness import PERMISSIONS, Running, bearer, dump

BASE = "/v1/organization/admin_api_keys"


async def test_create_list_get_revoke_in_openai_shapes(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    answer = await keys.client.post(
        BASE,
        json={
            "name": "platform-backend",
            "scope": {"project_ids": [project]},
            "permissions": ["keys:read", "keys:write"],
        },
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    created = answer.json()
    secret = created["value"]
    assert secret.startswith(apikeys.ADMIN_PREFIX)
    assert len(secret) == apikeys.ADMIN_KEY_LENGTH
    assert apikeys.is_well_formed_admin(secret)
    assert not apikeys.is_well_formed(secret), "never taken for an API key"
    assert created == {
        "object": "organization.admin_api_key",
        "id": created["id"],
        "name": "platform-backend",
        "redacted_value": f"sk-...{secret[-4:]}",
        "created_at": created["created_at"],
        "last_used_at": None,
        "owner": {"type": "root", "id": "root", "hint": None},
        "scope": {"project_ids": [project]},
        "permissions": ["keys:read", "keys:write"],
        "status": "active",
        "rotated_at": None,
        "revoked_at": None,
        "value": secret,
    }
    assert created["id"].startswith("admkey_")

    # Shown once: never again in a list or a get, nor stored; only its hash is.
    listed = (await keys.client.get(BASE)).json()
    assert set(listed) == {"object", "data", "first_id", "last_id", "has_more"}
    assert listed["object"] == "list"
    one = (await keys.client.get(f"{BASE}/{created['id']}")).json()
    without = {k: v for k, v in created.items() if k != "value"}
    assert listed["data"] == [without]
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (
        created["id"],
        created["id"],
        False,
    )
    assert one == without
    stored = await db.fetchrow("SELECT key_hash, hint FROM admin_api_keys")
    assert stored is not None
    assert stored["key_hash"] == apikeys.hash_key(secret)
    rows = "\n".join(line for table in (await dump(db, db_schema(keys))).values() for line in table)
    assert secret not in rows
    assert secret[len(apikeys.ADMIN_PREFIX) : -4] not in rows

    # It works, and last_used_at moves (within a minute).
    assert (
        await keys.client.get(f"/v1/projects/{project}/keys", headers=bearer(secret))
    ).is_success
    one = (await keys.client.get(f"{BASE}/{created['id']}")).json()
    assert one["last_used_at"] is not None

    deleted = await keys.client.delete(f"{BASE}/{created['id']}")
    assert deleted.json() == {
        "object": "organization.admin_api_key.deleted",
        "id": created["id"],
        "deleted": True,
    }
    answer = await keys.client.get(f"/v1/projects/{project}/keys", headers=bearer(secret))
    assert answer.status_code == 401
    again = await keys.client.delete(f"{BASE}/{created['id']}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "key_revoked"
    shown = (await keys.client.get(f"{BASE}/{created['id']}")).json()
    assert (shown["status"], shown["revoked_at"] is not None) == ("revoked", True)


def db_schema(keys: Running) -> str:
    return keys.settings.db_schema


async def test_rotation_refuses_the_old_secret_at_once(keys: Running) -> None:
    admin = await keys.admin_key(["projects:read"])
    assert (await keys.client.get("/v1/projects", headers=bearer(admin["value"]))).is_success
    answer = await keys.client.post(f"{BASE}/{admin['id']}/rotate")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    rotated = answer.json()
    assert rotated["id"] == admin["id"]
    assert rotated["value"] != admin["value"]
    assert rotated["redacted_value"] == f"sk-...{rotated['value'][-4:]}"
    assert rotated["rotated_at"] is not None
    old = await keys.client.get("/v1/projects", headers=bearer(admin["value"]))
    assert old.status_code == 401
    assert (await keys.client.get("/v1/projects", headers=bearer(rotated["value"]))).is_success
    assert "value" not in (await keys.client.get(f"{BASE}/{admin['id']}")).json()


async def test_an_admin_key_grants_only_what_it_holds(keys: Running) -> None:
    mine, other = await keys.project("mine"), await keys.project("other")
    granter = await keys.admin_key(["admin_keys:write", "keys:read"], [mine])
    as_granter = bearer(granter["value"])

    async def create(body: dict[str, Any]) -> Any:
        full = {"name": "n", "scope": {"project_ids": [mine]}, "permissions": ["keys:read"]}
        return await keys.client.post(BASE, json=full | body, headers=as_granter)

    # A permission it lacks: 403 naming it.
    answer = await create({"permissions": ["keys:read", "keys:write"]})
    assert answer.status_code == 403
    assert "'keys:write'" in answer.json()["error"]["message"]
    # Organization scope from a project-scoped key: 403.
    answer = await create({"scope": {"organization": True}})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "insufficient_permissions"
    # A project outside its scope reads exactly as one that does not exist.
    outside = await create({"scope": {"project_ids": [mine, other]}})
    missing = await create({"scope": {"project_ids": [mine, "proj_nothing"]}})
    assert outside.status_code == missing.status_code == 400
    assert outside.json()["error"]["param"] == "scope.project_ids"
    assert outside.text.replace(other, "proj_nothing") == missing.text
    # Within both: made, owned by the granter.
    made = await create({})
    assert made.status_code == 201
    assert made.json()["owner"] == {
        "type": "admin_key",
        "id": granter["id"],
        "hint": granter["redacted_value"],
    }

    # It sees only the admin keys it could have made: not root's wider ones, not its own
    # sibling with a permission it lacks; those are 404 as if they did not exist.
    wider = await keys.admin_key(["keys:read", "keys:write", "admin_keys:write"], [mine])
    elsewhere = await keys.admin_key(["keys:read"], [other])
    listed = (await keys.client.get(BASE, headers=as_granter)).json()
    assert {k["id"] for k in listed["data"]} == {granter["id"], made.json()["id"]}
    for hidden in (wider, elsewhere):
        for method, path in (
            ("GET", f"{BASE}/{hidden['id']}"),
            ("DELETE", f"{BASE}/{hidden['id']}"),
            ("POST", f"{BASE}/{hidden['id']}/rotate"),
        ):
            answer = await keys.client.request(method, path, headers=as_granter)
            assert answer.status_code == 404, (method, path)
            assert answer.json()["error"]["code"] == "not_found"
    # Root's list has them all.
    assert len((await keys.client.get(BASE)).json()["data"]) == 4


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"permissions": ["keys:delete"]}, "permissions"),
        ({"permissions": []}, "permissions"),
        ({"permissions": ["keys:read", "keys:read"]}, "permissions"),
        ({"permissions": "keys:read"}, "permissions"),
        ({"scope": {"project_ids": []}}, "scope.project_ids"),
        ({"scope": {"project_ids": ["proj_doesNotExist"]}}, "scope.project_ids"),
        ({"scope": {"project_ids": ["not a project id"]}}, "scope.project_ids"),
        ({"scope": {"project_ids": ["proj_x"] * 101}}, "scope.project_ids"),
        ({"scope": {}}, "scope"),
        ({"scope": {"organization": False}}, "scope.organization"),
        ({"scope": {"organization": True, "project_ids": ["proj_x"]}}, "scope"),
        ({"scope": {"everything": True}}, "scope.everything"),
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "x" * 1_000_000}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": 5}, "name"),
        ({"owner": "me"}, "owner"),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(
    keys: Running, body: dict[str, Any], param: str
) -> None:
    full = {"name": "n", "scope": {"organization": True}, "permissions": ["keys:read"]} | body
    answer = await keys.client.post(BASE, json=full)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert (await keys.client.get(BASE)).json()["data"] == []


async def test_every_permission_is_accepted_and_shown(keys: Running) -> None:
    admin = await keys.admin_key(PERMISSIONS)
    assert admin["permissions"] == PERMISSIONS
    assert admin["scope"] == {"organization": True}
