"""The openai SDK 1.x, unchanged, through the gateway: each endpoint answers, and the usage
the SDK reported is exactly what the Usage API counts for the key."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.system import CHAT, EMBED, System, run_client
from tests.polling import eventually


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_openai_sdk_1x_through_the_gateway(system: System) -> None:
    admin = {"Authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "sdk1"})).json()["id"]
        created = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "sdk1"})).json()

    line = await run_client(
        "openai1", "run_openai1.py", [f"{system.url('gateway')}/v1", CHAT, EMBED], created["key"]
    )
    told = json.loads(line)
    assert told["refused"] == "invalid_api_key"
    assert set(told["models"]) >= {CHAT, EMBED}
    calls = [told[name] for name in ("chat", "stream", "completion", "response", "embedding")]
    assert all(call is not None and call[0] > 0 for call in calls), told
    expected = [len(calls), sum(c[0] for c in calls), sum(c[1] for c in calls)]

    since = int(time.time()) - 3600

    async def totals() -> list[int]:
        async with httpx.AsyncClient(base_url=system.url("metering"), headers=admin) as api:
            got = await api.get(f"/v1/projects/{project}/usage", params={"start_time": since})
        rows = [row for bucket in got.json()["data"] for row in bucket["results"]]
        return [
            sum(r["num_model_requests"] for r in rows),
            sum(r["input_tokens"] for r in rows),
            sum(r["output_tokens"] for r in rows),
        ]

    # The models list is not metered; the five model calls are, exactly as the SDK saw them.
    await eventually(totals, until=lambda got: got == expected, what="SDK 1.x usage")
