"""``tollgate admin-keys`` and ``tollgate audit`` against the key service over real HTTP."""

from __future__ import annotations

import json

from shared import apikeys
from tests.keys.test_cli import tollgate, url

__all__ = ["url"]  # the served key service, a fixture of test_cli


async def test_admin_keys_from_the_command_line(url: str) -> None:
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "cli")
    project = json.loads(out)["id"]
    out, err = await tollgate(
        "--url", url, "admin-keys", "create", "backend",
        "--permissions", "keys:read,keys:write,audit:read", "--projects", project,
    )  # fmt: skip
    secret = out.strip()
    assert apikeys.is_well_formed_admin(secret)
    assert "will not be shown again" in err
    out, _ = await tollgate("--url", url, "admin-keys", "list")
    assert "backend" in out
    assert f"sk-...{secret[-4:]}" in out
    assert project in out
    assert secret not in out
    out, _ = await tollgate("--url", url, "--json", "admin-keys", "list")
    [listed] = json.loads(out)
    key_id = listed["id"]

    # The admin key is a token for the CLI too, within its permissions and scope.
    as_key = {"TOLLGATE_ADMIN_TOKEN": secret}
    out, _ = await tollgate("--url", url, "keys", "create", "-p", project, "app", env=as_key)
    assert apikeys.is_well_formed(out.strip())
    _, err = await tollgate("--url", url, "projects", "create", "nope", env=as_key, status=1)
    assert "insufficient_permissions" in err

    out, _ = await tollgate("--url", url, "admin-keys", "rotate", key_id)
    rotated = out.strip()
    assert rotated != secret
    _, err = await tollgate("--url", url, "keys", "list", "-p", project, env=as_key, status=1)
    assert "invalid_api_key" in err
    out, _ = await tollgate("--url", url, "admin-keys", "revoke", key_id)
    assert f"Revoked admin key {key_id}." in out
    await tollgate(
        "--url", url, "keys", "list", "-p", project, env={"TOLLGATE_ADMIN_TOKEN": rotated},
        status=1,
    )  # fmt: skip

    # Bad flags: exit 2 before any call.
    for argv in (
        ["admin-keys", "create", "x", "--permissions", "keys:delete", "--organization"],
        ["admin-keys", "create", "x", "--permissions", "keys:read"],
        ["audit", "--type", "key.stolen"],
        ["audit", "--since", "yesterday"],
    ):
        await tollgate("--url", url, *argv, status=2)


async def test_audit_from_the_command_line(url: str) -> None:
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "one")
    one = json.loads(out)["id"]
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "two")
    two = json.loads(out)["id"]
    await tollgate("--url", url, "keys", "create", "-p", one, "k")
    out, _ = await tollgate("--url", url, "audit")
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "ACTOR", "PROJECT", "RESOURCE", "CHANGES"]
    # TIME is three words ("2026-12-07 20:01:02 UTC"); newest first.
    types = [line.split()[3] for line in lines[1:]]
    assert types == ["api_key.created", "project.created", "project.created"]
    out, _ = await tollgate("--url", url, "--json", "audit", "--project", two)
    assert [(e["type"], e["resource_id"]) for e in json.loads(out)] == [("project.created", two)]
    out, _ = await tollgate(
        "--url", url, "--json", "audit", "--type", "project.created", "--actor", "root",
        "--since", "2020-01-01T00:00:00Z", "--limit", "1",
    )  # fmt: skip
    assert [e["resource_id"] for e in json.loads(out)] == [two]
    out, _ = await tollgate("--url", url, "--json", "audit", "--until", "1000")
    assert json.loads(out) == []
