"""Daft's `prompt` and `embed_text`, unchanged, through the gateway: every call authenticated,
answered and metered per key."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.system import CHAT, EMBED, System, run_client
from tests.polling import eventually

ROWS = 5


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_daft_prompt_and_embed_text_through_the_gateway(system: System) -> None:
    admin = {"Authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "daft"})).json()["id"]
        created = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "daft"})).json()

    line = await run_client(
        "daft",
        "run_daft.py",
        [f"{system.url('gateway')}/v1", CHAT, EMBED, str(ROWS)],
        created["key"],
    )
    answers = json.loads(line)
    assert answers == {"responses": [True] * ROWS, "chat": [True] * ROWS, "dimensions": [64]}

    since = int(time.time()) - 3600

    async def requests_by_model() -> dict[str, int]:
        async with httpx.AsyncClient(base_url=system.url("metering"), headers=admin) as api:
            got = await api.get(
                f"/v1/projects/{project}/usage",
                params={"start_time": since, "group_by": "model", "bucket_width": "1d"},
            )
        counts: dict[str, int] = {}
        for bucket in got.json()["data"]:
            for row in bucket["results"]:
                counts[row["model"]] = counts.get(row["model"], 0) + row["num_model_requests"]
        return counts

    # One request per row and call; embed_text may add its probe request.
    counted = await eventually(
        requests_by_model,
        until=lambda c: c.get(CHAT) == 2 * ROWS and c.get(EMBED, 0) >= 1,
        what="Daft's requests in the Usage API",
    )
    assert counted[EMBED] <= ROWS + 1
