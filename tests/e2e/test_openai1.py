"""The openai SDK 1.x, unchanged, through the gateway: each endpoint answers, and the usage
the SDK reported is exactly what the Usage API counts for the key."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.stack import Endpoints
from tests.e2e.system import REPO, System, start_system
from tests.polling import eventually

CHAT = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "Qwen/Qwen3-Embedding-0.6B"
CLIENT_DIR = REPO / "tests" / "clients" / "openai1"
CLIENT_PYTHON = CLIENT_DIR / ".venv" / "bin" / "python"


@pytest.fixture
def system(
    endpoints: Endpoints, topic_prefix: str, unique: str, tmp_path: Path
) -> Iterator[System]:
    started = start_system(endpoints, topic_prefix, unique, tmp_path)
    yield started
    started.stop()


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_openai_sdk_1x_through_the_gateway(system: System) -> None:
    assert CLIENT_PYTHON.exists(), "the SDK 1.x environment is missing: run `make bootstrap`"
    admin = {"Authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "sdk1"})).json()["id"]
        created = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "sdk1"})).json()

    run = await asyncio.create_subprocess_exec(
        str(CLIENT_PYTHON),
        str(CLIENT_DIR / "run_openai1.py"),
        f"{system.url('gateway')}/v1",
        CHAT,
        EMBED,
        env={**os.environ, "TOLLGATE_KEY": created["key"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), 120)
    assert run.returncode == 0, err.decode()[-3000:]
    told = json.loads(out.decode().strip().splitlines()[-1])
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
