"""The permission matrix: every management route of the key service, against an admin key that
lacks the route's permission (403 naming it), one holding only it (2xx in scope; 404 out of
scope, the body a missing project gets), a revoked one and an API key (401), and the operator
token (2xx). On the real servers, each route with a service of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.keys.harness import PERMISSIONS, Running, bearer

MISSING_PROJECT = "proj_doesNotExist0000000000"
MISSING_ADMIN_KEY = "admkey_doesNotExist000000000"


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    permission: str
    body: dict[str, Any] | None = None
    organization: bool = False  # the 2xx call needs an organization-scoped key

    @property
    def scoped(self) -> bool:
        return "{p}" in self.template or "{a}" in self.template


ROUTES = [
    Route("POST", "/v1/projects", "projects:write", {"name": "p"}, organization=True),
    Route("GET", "/v1/projects", "projects:read"),
    Route("GET", "/v1/projects/{p}", "projects:read"),
    Route("PATCH", "/v1/projects/{p}", "projects:write", {"name": "renamed"}),
    Route("POST", "/v1/projects/{p}/keys", "keys:write", {"name": "k"}),
    Route("GET", "/v1/projects/{p}/keys", "keys:read"),
    Route("GET", "/v1/projects/{p}/keys/{k}", "keys:read"),
    Route("PATCH", "/v1/projects/{p}/keys/{k}", "keys:write", {"name": "k2"}),
    Route("POST", "/v1/projects/{p}/keys/{k}/default", "keys:write"),
    Route("POST", "/v1/projects/{p}/keys/{k}/rotate", "keys:write", {"grace_period_seconds": 0}),
    Route("DELETE", "/v1/projects/{p}/keys/{k}", "keys:write"),
    Route("GET", "/v1/organization/admin_api_keys", "admin_keys:write"),
    Route(
        "POST",
        "/v1/organization/admin_api_keys",
        "admin_keys:write",
        {"name": "a", "scope": {"project_ids": ["{p}"]}, "permissions": ["admin_keys:write"]},
    ),
    Route("GET", "/v1/organization/admin_api_keys/{a}", "admin_keys:write"),
    Route("POST", "/v1/organization/admin_api_keys/{a}/rotate", "admin_keys:write"),
    Route("DELETE", "/v1/organization/admin_api_keys/{a}", "admin_keys:write"),
    Route("GET", "/v1/organization/audit_logs", "audit:read"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


class Matrix:
    """A project in scope (P) and one out of it (Q), and fresh targets in each per call."""

    def __init__(self, keys: Running, p: str, q: str) -> None:
        self.keys, self.p, self.q = keys, p, q

    async def names(self, project: str) -> dict[str, str]:
        """A fresh key and a fresh admin key (admin_keys:write, scoped to it) in project."""
        key = await self.keys.key(project, "target")
        admin = await self.keys.admin_key(["admin_keys:write"], [project], "target")
        return {"p": project, "k": key["id"], "a": admin["id"]}

    async def call(self, route: Route, names: dict[str, str], secret: str) -> httpx.Response:
        return await self.keys.client.request(
            route.method,
            route.template.format(**names),
            json=_fill(route.body, names),
            headers=bearer(secret),
        )


@pytest.fixture
async def matrix(keys: Running) -> Matrix:
    return Matrix(keys, await keys.project("in-scope"), await keys.project("out-of-scope"))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
async def test_route_checks_admin_keys(matrix: Matrix, route: Route) -> None:
    keys = matrix.keys
    only = await keys.admin_key([route.permission], None if route.organization else [matrix.p])
    lacking = await keys.admin_key([p for p in PERMISSIONS if p != route.permission])

    # Lacking the route's permission (holding every other, organization-wide): 403 naming it.
    answer = await matrix.call(route, await matrix.names(matrix.p), lacking["value"])
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "insufficient_permissions"
    assert f"'{route.permission}'" in error["message"]

    # Holding only the route's permission, in scope: done.
    answer = await matrix.call(route, await matrix.names(matrix.p), only["value"])
    assert answer.is_success, answer.text

    if route.scoped:
        # Out of scope: 404, the very body a project (or admin key) that does not exist gets.
        other = await matrix.names(matrix.q)
        outside = await matrix.call(route, other, only["value"])
        missing = await matrix.call(
            route, other | {"p": MISSING_PROJECT, "a": MISSING_ADMIN_KEY}, only["value"]
        )
        assert outside.status_code == missing.status_code == 404, (outside.text, missing.text)
        hidden = outside.text.replace(other["p"], MISSING_PROJECT)
        assert hidden.replace(other["a"], MISSING_ADMIN_KEY) == missing.text
    if route.organization:
        # A project-scoped key with the permission still cannot create a project.
        scoped = await keys.admin_key([route.permission], [matrix.p])
        answer = await matrix.call(route, await matrix.names(matrix.p), scoped["value"])
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "insufficient_permissions"

    # Revoked: 401, at once. An API key is never a management credential: 401.
    everything = await keys.admin_key(PERMISSIONS)
    assert (
        await keys.client.delete(f"/v1/organization/admin_api_keys/{everything['id']}")
    ).is_success
    api_key = await keys.key(matrix.p, "inference")
    for secret in (everything["value"], api_key["key"]):
        answer = await matrix.call(route, await matrix.names(matrix.p), secret)
        assert answer.status_code == 401, (secret[:12], answer.text)
        assert answer.json()["error"]["code"] == "invalid_api_key"

    # The operator token: root, everything.
    answer = await keys.client.request(
        route.method,
        route.template.format(**(names := await matrix.names(matrix.p))),
        json=_fill(route.body, names),
    )
    assert answer.is_success, answer.text


async def test_a_scoped_key_lists_only_its_projects(matrix: Matrix) -> None:
    keys = matrix.keys
    scoped = await keys.admin_key(["projects:read"], [matrix.p])
    listed = (await keys.client.get("/v1/projects", headers=bearer(scoped["value"]))).json()
    assert [p["id"] for p in listed["data"]] == [matrix.p]
    # A cursor naming a project out of scope is as unknown as one that does not exist.
    for after in (matrix.q, MISSING_PROJECT):
        answer = await keys.client.get(
            "/v1/projects", params={"after": after}, headers=bearer(scoped["value"])
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "after"
    everything = (await keys.client.get("/v1/projects")).json()
    assert [p["id"] for p in everything["data"]] == [matrix.p, matrix.q]


async def test_an_admin_key_opens_neither_verify_nor_anything_without_its_checksum(
    keys: Running,
) -> None:
    admin = await keys.admin_key(PERMISSIONS)
    answer = await keys.client.post(
        "/internal/v1/keys/verify", json={"key_hash": "0" * 64}, headers=bearer(admin["value"])
    )
    assert answer.status_code == 401
    # One character changed: refused by its checksum, before any lookup.
    secret = admin["value"]
    forged = secret[:-7] + ("A" if secret[-7] != "A" else "B") + secret[-6:]
    misses = keys.app.state.admin_keys.misses
    answer = await keys.client.get("/v1/projects", headers=bearer(forged))
    assert answer.status_code == 401
    assert keys.app.state.admin_keys.misses == misses


async def test_out_of_scope_is_404_before_the_body_is_read(matrix: Matrix) -> None:
    keys = matrix.keys
    scoped = await keys.admin_key(["projects:write", "keys:write"], [matrix.p])
    for project in (matrix.q, MISSING_PROJECT):
        for method, path in (
            ("PATCH", f"/v1/projects/{project}"),
            ("POST", f"/v1/projects/{project}/keys"),
        ):
            answer = await keys.client.request(
                method, path, json={"name": ""}, headers=bearer(scoped["value"])
            )
            assert answer.status_code == 404, answer.text
    # In scope, the same bad body is the body's 400.
    answer = await keys.client.patch(
        f"/v1/projects/{matrix.p}", json={"name": ""}, headers=bearer(scoped["value"])
    )
    assert answer.status_code == 400
