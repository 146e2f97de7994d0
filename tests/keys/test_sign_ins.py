"""Console sign-ins at the key service: who a credential is, for the console only (the
internal token), and one audit entry per attempt, success or failure, holding the browser's
address and User-Agent and never the credential."""

from __future__ import annotations

from typing import Any

import pytest

from shared import apikeys
from tests.keys.harness import ADMIN_TOKEN, INTERNAL, Running, bearer

PATH = "/internal/v1/console_sign_ins"
BROWSER = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11; Linux) test\x07bell"}


async def _sign_in(keys: Running, credential: str, **extra: Any) -> Any:
    body = {"credential": credential, **BROWSER, **extra}
    return await keys.client.post(PATH, json=body, headers=INTERNAL)


async def _logins(keys: Running) -> list[dict[str, Any]]:
    answer = await keys.client.get(
        "/v1/organization/audit_logs",
        params={"event_types[]": ["login.succeeded", "login.failed"], "limit": 100},
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


async def test_the_operator_token_and_an_admin_key_sign_in_and_are_audited(keys: Running) -> None:
    project = await keys.project()
    admin = await keys.admin_key(["keys:read", "usage:read"], [project], name="alice")

    root = await _sign_in(keys, ADMIN_TOKEN)
    assert root.status_code == 200, root.text
    assert root.json()["principal"] == {
        "type": "root",
        "id": "root",
        "name": None,
        "hint": None,
        "organization": True,
        "project_ids": [],
        "permissions": sorted(root.json()["principal"]["permissions"]),
    }
    assert len(root.json()["principal"]["permissions"]) == 8

    member = await _sign_in(keys, "  " + admin["value"] + "\n")  # pasted with blanks
    assert member.status_code == 200, member.text
    assert member.json()["principal"] == {
        "type": "admin_key",
        "id": admin["id"],
        "name": "alice",
        "hint": admin["redacted_value"],
        "organization": False,
        "project_ids": [project],
        "permissions": ["keys:read", "usage:read"],
    }

    entries = await _logins(keys)
    assert [e["type"] for e in entries] == ["login.succeeded", "login.succeeded"]
    newest, oldest = entries
    assert newest["actor"] == {
        "type": "console_session",
        "id": admin["id"],
        "hint": admin["redacted_value"],
    }
    assert newest["resource_id"] == admin["id"]
    assert newest["changes"] == {"before": None, "after": {"signed_in_as": "admin_key"}}
    assert oldest["actor"] == {"type": "console_session", "id": "root", "hint": None}
    assert newest["ip"] == "203.0.113.9"
    assert newest["user_agent"] == "Mozilla/5.0 (X11; Linux) test?bell"  # printable only


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("api_key", "api_key"),
        ("revoked", "revoked_admin_key"),
        ("invented", "unknown_admin_key"),
        ("garbage", "not_a_credential"),
        ("empty", "not_a_credential"),
    ],
)
async def test_anything_else_is_refused_and_audited_as_failed(
    keys: Running, kind: str, reason: str
) -> None:
    project = await keys.project()
    revoked = await keys.admin_key(["keys:read"], [project])
    await keys.client.delete(f"/v1/organization/admin_api_keys/{revoked['id']}")
    credential = {
        "api_key": (await keys.key(project))["key"],
        "revoked": revoked["value"],
        "invented": apikeys.generate_admin(),  # well formed, never issued
        "garbage": "password123 ' OR 1=1 --",
        "empty": "",
    }[kind]
    answer = await _sign_in(keys, credential)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_credentials"
    assert credential[-8:] not in answer.text or not credential
    (failed,) = await _logins(keys)
    assert failed["type"] == "login.failed"
    assert failed["actor"] == {"type": "console_session", "id": "anonymous", "hint": None}
    assert failed["changes"] == {"before": None, "after": {"reason": reason}}
    assert failed["resource_id"] == (revoked["id"] if kind == "revoked" else "console")
    if credential:
        listing = (await keys.client.get("/v1/organization/audit_logs?limit=100")).text
        assert credential not in listing, "the credential is never in the audit log"


async def test_only_the_console_may_ask(keys: Running) -> None:
    body = {"credential": ADMIN_TOKEN}
    for headers in ({"Authorization": ""}, bearer(ADMIN_TOKEN), bearer("sk-tg-admin-" + "A" * 48)):
        answer = await keys.client.post(PATH, json=body, headers=headers)
        assert answer.status_code == 401, headers
    assert await _logins(keys) == [], "a refused caller writes nothing"


async def test_hostile_bodies_are_refused_before_anything_is_written(keys: Running) -> None:
    for body in (
        {"credential": "x" * 513},
        {"credential": ADMIN_TOKEN, "ip": "1" * 257},
        {"credential": ADMIN_TOKEN, "extra": 1},
        {"credential": 42},
        {},
    ):
        answer = await keys.client.post(PATH, json=body, headers=INTERNAL)
        assert answer.status_code in (400, 422), body
    long_agent = await _sign_in(keys, ADMIN_TOKEN, user_agent="A" * 8000)
    assert long_agent.status_code == 200
    (entry,) = await _logins(keys)
    assert entry["user_agent"] == "A" * 512
