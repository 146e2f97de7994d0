"""Admin keys at metering and billing, on real servers: the Usage and Costs APIs answer an
admin key as the key service does (403 naming a missing permission, 404 out of scope, 401
revoked or rotated away), with no round trip per check, and a revocation refused within a
second with Kafka down (nothing listens on its port: the states come from the key service's
stream, not Kafka nor Redis). With the key service away, admin keys get 503 within a second
while the operator token still works."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.ports import free_port
from services.billing.main import create_app as create_billing
from services.keys.main import create_app as create_keys
from services.metering.main import create_app as create_metering
from shared import apikeys
from shared.events import AdminKeyState
from shared.http_server import HttpProtocol
from tests.keys.harness import AUTH as KEYS_AUTH
from tests.keys.harness import make_settings
from tests.metering.harness import AUTH, running
from tests.metering.ledgers import Case
from tests.polling import eventually
from tests.served import Served

USAGE = "/v1/projects/{}/usage?start_time=1767225600"
COSTS = "/v1/projects/{}/costs?start_time=1767225600"
TOTAL = "/v1/projects/{}/costs/total?start_time=1767225600"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class World:
    keys: httpx.AsyncClient  # the key service, over a real socket, as the operator
    keys_served: Served
    metering: httpx.AsyncClient
    billing: httpx.AsyncClient
    metering_app: Any
    billing_app: Any

    async def project(self) -> str:
        answer = await self.keys.post("/v1/projects", json={"name": "p"})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def admin_key(self, permissions: list[str], projects: list[str] | None) -> dict[str, Any]:
        scope = {"organization": True} if projects is None else {"project_ids": projects}
        answer = await self.keys.post(
            "/v1/organization/admin_api_keys",
            json={"name": "member", "scope": scope, "permissions": permissions},
        )
        assert answer.status_code == 201, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def current(self) -> bool:
        apps = (self.metering_app, self.billing_app)
        return all(app.state.admin_keys.current() for app in apps)


@pytest.fixture
async def world(case: Case, pg_schema: str) -> AsyncIterator[World]:
    kafka_down = f"127.0.0.1:{free_port()}"  # nothing listens there: Kafka is down
    keys_settings = make_settings(
        kafka=kafka_down,
        database_url=case.database_url,
        schema=pg_schema,
        prefix=case.prefix,
        group=f"keys-{case.unique}",
        redis_write=False,
        relay=False,
    )
    served = await Served(create_keys(keys_settings), http=HttpProtocol, lifespan="on").start()
    m_settings, b_settings = case.settings(
        consume=False,
        kafka_bootstrap=kafka_down,
        keys_url=served.url,
        internal_token=keys_settings.internal_token,  # what the key service expects
    )
    metering_app, billing_app = create_metering(m_settings), create_billing(b_settings)
    try:
        async with (
            httpx.AsyncClient(base_url=served.url, headers=KEYS_AUTH, timeout=10) as keys,
            running(metering_app) as metering,
            running(billing_app) as billing,
        ):
            w = World(keys, served, metering, billing, metering_app, billing_app)
            await eventually(w.current, what="metering and billing follow the admin keys")
            yield w
    finally:
        await served.stop()


async def _statuses(
    w: World, secret: str, project: str, *, changing: bool = False
) -> tuple[int, int]:
    """The Usage API's status and the Costs API's (both its routes alike). While the key is
    ``changing`` (revoked, or its states' stream going silent), the two Costs calls may
    straddle the change: then a Costs status counts only when both routes agree (0 if not)."""
    usage = await w.metering.get(USAGE.format(project), headers=bearer(secret))
    costs = await w.billing.get(COSTS.format(project), headers=bearer(secret))
    total = await w.billing.get(TOTAL.format(project), headers=bearer(secret))
    if changing:
        agreed = costs.status_code == total.status_code
        return usage.status_code, costs.status_code if agreed else 0
    assert total.status_code == costs.status_code, "both Costs API routes answer alike"
    return usage.status_code, costs.status_code


async def test_the_permission_matrix_at_metering_and_billing(world: World) -> None:
    mine, other = await world.project(), await world.project()
    usage_only = await world.admin_key(["usage:read"], [mine])
    costs_only = await world.admin_key(["costs:read"], [mine])
    both_org = await world.admin_key(["usage:read", "costs:read"], None)
    nothing_here = await world.admin_key(["keys:read"], [mine])

    assert await _statuses(world, usage_only["value"], mine) == (200, 403)
    assert await _statuses(world, costs_only["value"], mine) == (403, 200)
    assert await _statuses(world, both_org["value"], other) == (200, 200)
    assert await _statuses(world, nothing_here["value"], mine) == (403, 403)
    # Out of scope: the body of a project that does not exist, whatever the permission.
    assert await _statuses(world, usage_only["value"], other) == (404, 403)
    answer = await world.metering.get(USAGE.format(other), headers=bearer(usage_only["value"]))
    assert answer.json()["error"]["message"] == f"No project found with id '{other}'."
    assert answer.json()["error"]["param"] == "project_id"
    denied = await world.billing.get(COSTS.format(mine), headers=bearer(usage_only["value"]))
    assert denied.json()["error"]["code"] == "insufficient_permissions"
    assert "'costs:read'" in denied.json()["error"]["message"]

    # An API key, a made-up admin key, garbage and nothing: 401 at both.
    api_key = await world.keys.post(f"/v1/projects/{mine}/keys", json={"name": "k"})
    invented = apikeys.generate_admin()  # well formed, never issued
    for secret in (api_key.json()["key"], invented, "nonsense"):
        assert await _statuses(world, secret, mine) == (401, 401)
    assert (await world.metering.get(USAGE.format(mine))).status_code == 401
    # The operator token still opens everything.
    assert (await world.metering.get(USAGE.format(other), headers=AUTH)).status_code == 200


async def _refused_within(world: World, secret: str, project: str, since: float) -> float:
    """Seconds from since to the sending of the first calls refused at both services."""
    while True:
        sent = time.monotonic()
        if await _statuses(world, secret, project, changing=True) == (401, 401):
            return sent - since
        assert sent - since < 1.0, "still accepted a second after the change"
        await asyncio.sleep(0.01)


async def test_revocation_and_rotation_are_refused_within_a_second_with_kafka_down(
    world: World,
) -> None:
    project = await world.project()
    revoked = await world.admin_key(["usage:read", "costs:read"], [project])
    rotated = await world.admin_key(["usage:read", "costs:read"], [project])
    for secret in (revoked["value"], rotated["value"]):
        assert await _statuses(world, secret, project) == (200, 200)

    started = time.monotonic()
    gone = await world.keys.delete(f"/v1/organization/admin_api_keys/{revoked['id']}")
    assert gone.is_success, gone.text
    took = await _refused_within(world, revoked["value"], project, started)

    started = time.monotonic()
    answer = await world.keys.post(f"/v1/organization/admin_api_keys/{rotated['id']}/rotate")
    took_rotation = await _refused_within(world, rotated["value"], project, started)
    assert await _statuses(world, answer.json()["value"], project) == (200, 200)
    assert max(took, took_rotation) < 1.0


async def test_a_check_costs_no_round_trip_on_the_warm_path(world: World) -> None:
    project = await world.project()
    admin = await world.admin_key(["usage:read"], [project])
    assert (await _statuses(world, admin["value"], project))[0] == 200
    streamed = world.keys_served.app.state.admin_key_states
    reads = streamed.reads
    follower = world.metering_app.state.admin_keys
    changes = follower.changes
    for _ in range(20):
        answer = await world.metering.get(USAGE.format(project), headers=bearer(admin["value"]))
        assert answer.status_code == 200
    # Nothing was read again at the key service, and nothing new came down the stream.
    assert (streamed.reads, follower.changes) == (reads, changes)


async def test_with_the_key_service_away_admin_keys_get_503_and_the_operator_token_works(
    world: World,
) -> None:
    project = await world.project()
    admin = await world.admin_key(["usage:read", "costs:read"], [project])
    assert await _statuses(world, admin["value"], project) == (200, 200)
    await world.keys_served.stop()
    started = time.monotonic()
    await eventually(
        lambda: _statuses(world, admin["value"], project, changing=True),
        until=lambda s: s == (503, 503),
        what="admin keys refused with the key service away",
    )
    assert time.monotonic() - started < 2.0
    answer = await world.metering.get(USAGE.format(project), headers=bearer(admin["value"]))
    assert answer.json()["error"]["code"] == "admin_keys_unavailable"
    assert (await world.metering.get(USAGE.format(project), headers=AUTH)).status_code == 200
    ready = (await world.metering.get("/readyz")).json()
    assert ready["admin_keys_current"] is False


async def test_hostile_credentials_are_401_at_both(world: World) -> None:
    project = await world.project()
    for authorization in (
        "Bearer",
        "Bearer sk-tg-admin-%" + "A" * 47,  # a character outside the key's alphabet
        "Basic " + "sk-tg-admin-" + "A" * 48,
        "Bearer sk-tg-admin-" + "A" * 20_000,  # long, under the head limit
        "Bearer sk-tg-admin-\t" + "A" * 48,
        "bearer  " + apikeys.generate_admin(),  # well formed, never issued
    ):
        headers = {"Authorization": authorization}
        usage = await world.metering.get(USAGE.format(project), headers=headers)
        costs = await world.billing.get(COSTS.format(project), headers=headers)
        assert (usage.status_code, costs.status_code) == (401, 401), authorization[:40]
        assert usage.json()["error"]["code"] == "invalid_api_key"


async def test_the_admin_key_stream_is_for_the_internal_token_only(
    world: World, case: Case
) -> None:
    project = await world.project()
    admin = await world.admin_key(["usage:read"], [project])
    api_key = await world.keys.post(f"/v1/projects/{project}/keys", json={"name": "k"})
    url = world.keys_served.url + "/internal/v1/admin_key_states"
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(url)).status_code == 401  # no credential at all
        for token in ("wrong-token-0123456789", KEYS_AUTH["Authorization"][7:],
                      admin["value"], api_key.json()["key"]):  # fmt: skip
            refused = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401, token[:12]
        internal = world.metering_app.state.admin_keys.token.get_secret_value()
        async with client.stream(
            "GET", url, headers={"Authorization": f"Bearer {internal}"}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["cache-control"] == "no-store"
            first = await anext(stream.aiter_lines())
    snapshot = json.loads(first)
    assert snapshot["type"] == "snapshot"
    mine = [s for s in snapshot["states"] if s["id"] == admin["id"]]
    assert len(mine) == 1
    assert admin["value"] not in first, "never a secret on the stream"
    assert set(mine[0]) == set(AdminKeyState.model_fields)
