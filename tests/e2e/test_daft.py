"""Daft's `prompt` and `embed_text`, unchanged, through the gateway: every call authenticated,
answered and metered per key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
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
DAFT_DIR = REPO / "tests" / "clients" / "daft"
DAFT_PYTHON = DAFT_DIR / ".venv" / "bin" / "python"
ROWS = 5


@pytest.fixture
def system(
    endpoints: Endpoints, topic_prefix: str, unique: str, tmp_path: Path
) -> Iterator[System]:
    started = start_system(endpoints, topic_prefix, unique, tmp_path)
    yield started
    started.stop()


@pytest.mark.slow
@pytest.mark.usefixtures("drop_schemas")
async def test_daft_prompt_and_embed_text_through_the_gateway(system: System) -> None:
    assert DAFT_PYTHON.exists(), f"Daft's environment is missing: run `make bootstrap` ({DAFT_DIR})"
    admin = {"Authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(base_url=system.url("keys"), headers=admin) as keys:
        project = (await keys.post("/v1/projects", json={"name": "daft"})).json()["id"]
        created = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "daft"})).json()

    run = await asyncio.create_subprocess_exec(
        str(DAFT_PYTHON),
        str(DAFT_DIR / "run_daft.py"),
        f"{system.url('gateway')}/v1",
        CHAT,
        EMBED,
        str(ROWS),
        env={**os.environ, "TOLLGATE_KEY": created["key"], "DAFT_PROGRESS_BAR": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), 240)
    assert run.returncode == 0, err.decode()[-3000:]
    answers = json.loads(out.decode().strip().splitlines()[-1])
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
    assert sys.executable != str(DAFT_PYTHON)  # Daft ran as its own client process
