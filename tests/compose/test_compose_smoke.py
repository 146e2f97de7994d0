"""The operator's path for real: `make compose-up` on this machine's Docker engine, the stock
openai SDK and Daft through 127.0.0.1:8080, the Usage and Costs APIs counting exactly, a
revocation at the gateway within a second, and `compose-down` leaving nothing behind.

Runs only with ``-m compose`` (``make compose-test``): it builds images and runs containers.
Its compose project (``tollgate-smoke``) and secrets are its own; the engine is the one
``deploy.docker_engine`` finds or starts, stopped at the end only if this run started it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from deploy.compose import PORTS, RUN_DIR
from deploy.docker_engine import Engine, docker_cli
from deploy.process import port_open
from deploy.servers import REPO
from shared.catalogue import load_catalogue
from tests.e2e.system import run_client
from tests.polling import eventually

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

PROJECT = "tollgate-smoke"
CHAT = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "Qwen/Qwen3-Embedding-0.6B"
ENV = {**os.environ, "TOLLGATE_COMPOSE_PROJECT": PROJECT, "TOLLGATE_COMPOSE_PROFILES": "demo"}


@dataclass
class Running:
    """What compose-up printed and wrote: the first key, its project and the operator token."""

    key: str
    project_id: str
    key_id: str
    admin_token: str
    engine_started: bool

    def admin(self, port: int) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=10)


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.compose", *args],
        env=ENV,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def _docker(*args: str) -> list[str]:
    engine_env = Engine(RUN_DIR).env()
    done = subprocess.run(
        [docker_cli(), *args], env=engine_env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """compose-up once for the module; compose-down --volumes afterwards (again if a test did)."""
    busy = [port for port in PORTS.values() if port_open(port)]
    assert not busy, f"ports {busy} are taken before compose-up: something else runs on them"
    engine_was_ours = Engine(RUN_DIR).ours_running()
    engine_answered = Engine(RUN_DIR).answers()
    up = _compose("up")
    assert up.returncode == 0, up.stdout + up.stderr
    printed = re.search(r"^first key\s+(sk-tg-\S+)$", up.stdout, re.MULTILINE)
    assert printed, up.stdout
    home = RUN_DIR / "compose" / PROJECT
    record = json.loads((home / "first-key.json").read_text())
    assert printed.group(1) not in (home / "first-key.json").read_text()
    yield Running(
        key=printed.group(1),
        project_id=record["project_id"],
        key_id=record["key_id"],
        admin_token=(home / "admin-token").read_text().strip(),
        engine_started=not engine_answered and not engine_was_ours,
    )
    _compose("down", "--volumes")


async def test_sdk_calls_are_counted_exactly_by_usage_and_costs(running: Running) -> None:
    since = int(time.time()) - 60
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:8080/v1", api_key=running.key)
    chat = await client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hello through compose"}]
    )
    embedded = await client.embeddings.create(model=EMBED, input=["a toll", "a gate"])
    await client.close()
    assert chat.usage is not None
    assert chat.choices[0].message.content
    assert len(embedded.data) == 2
    told = {
        CHAT: (chat.usage.prompt_tokens, chat.usage.completion_tokens),
        EMBED: (embedded.usage.prompt_tokens, 0),
    }

    metering = running.admin(PORTS["metering"])

    async def usage() -> dict[str, tuple[int, int, int]]:
        got = await metering.get(
            f"/v1/projects/{running.project_id}/usage",
            params={
                "start_time": since,
                "bucket_width": "1d",
                "group_by": "model",
                "api_key_ids": running.key_id,
            },
        )
        assert got.status_code == 200, got.text
        rows = [r for b in got.json()["data"] for r in b["results"]]
        return {
            r["model"]: (r["num_model_requests"], r["input_tokens"], r["output_tokens"])
            for r in rows
        }

    expected = {model: (1, i, o) for model, (i, o) in told.items()}
    await eventually(usage, until=lambda got: got == expected, timeout=30, what="usage")

    catalogue = load_catalogue(REPO / "deploy" / "models.yaml")
    cost = Decimal(0)
    for model, (input_tokens, output_tokens) in told.items():
        entry = catalogue.get(model)
        assert entry is not None
        price = entry.prices[-1]
        cost += (
            input_tokens * price.input_per_million + output_tokens * price.output_per_million
        ) / Decimal(1_000_000)
    billing = running.admin(PORTS["billing"])

    async def costs() -> Decimal:
        got = await billing.get(
            f"/v1/projects/{running.project_id}/costs",
            params={"start_time": since - 86400, "api_key_ids": running.key_id},
        )
        assert got.status_code == 200, got.text
        body: dict[str, Any] = json.loads(got.text, parse_float=Decimal)
        return sum(
            (Decimal(r["amount"]["value"]) for b in body["data"] for r in b["results"]),
            Decimal(0),
        )

    await eventually(costs, until=lambda got: got == cost, timeout=30, what="costs")
    await metering.aclose()
    await billing.aclose()


async def test_a_revocation_reaches_the_gateway_within_a_second(running: Running) -> None:
    keys = running.admin(PORTS["keys"])
    made = await keys.post(f"/v1/projects/{running.project_id}/keys", json={"name": "revoke-me"})
    assert made.status_code == 201, made.text
    secret, key_id = made.json()["key"], made.json()["id"]
    gateway = httpx.AsyncClient(
        base_url="http://127.0.0.1:8080/v1", headers={"Authorization": f"Bearer {secret}"}
    )

    async def models_status() -> int:
        return (await gateway.get("/models")).status_code

    await eventually(models_status, until=lambda s: s == 200, timeout=10, what="the new key works")
    revoked = await keys.delete(f"/v1/projects/{running.project_id}/keys/{key_id}")
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    await eventually(models_status, until=lambda s: s == 401, timeout=1.0, interval=0.01)
    print(f"revocation reached the gateway in {(time.monotonic() - started) * 1000:.0f} ms")
    await gateway.aclose()
    await keys.aclose()


async def test_daft_prompt_and_embed_text_through_the_published_port(running: Running) -> None:
    keys = running.admin(PORTS["keys"])
    made = await keys.post(f"/v1/projects/{running.project_id}/keys", json={"name": "daft"})
    assert made.status_code == 201, made.text
    await keys.aclose()
    rows = 3
    line = await run_client(
        "daft",
        "run_daft.py",
        ["http://127.0.0.1:8080/v1", CHAT, EMBED, str(rows)],
        made.json()["key"],
    )
    assert json.loads(line) == {
        "responses": [True] * rows,
        "chat": [True] * rows,
        "dimensions": [64],
    }


def test_down_leaves_no_container_network_volume_or_port(running: Running) -> None:
    down = _compose("down", "--volumes")
    assert down.returncode == 0, down.stdout + down.stderr
    engine = Engine(RUN_DIR)
    label = f"label=com.docker.compose.project={PROJECT}"
    if engine.answers():
        assert _docker("ps", "-aq", "--filter", label) == []
        assert _docker("network", "ls", "-q", "--filter", label) == []
        assert _docker("volume", "ls", "-q", "--filter", label) == []
    assert [p for p in PORTS.values() if port_open(p)] == []
    if running.engine_started:
        assert not engine.ours_running(), "compose-down left the dockerd it started running"
        mounts = Path("/proc/mounts").read_text()
        assert str(engine.home) not in mounts, "dockerd's mounts were left behind"
