"""The OpenAPI documents of the key service, metering and billing tell the truth.

Schemathesis (a property-based contract tester, its CLI as an operator would run it) reads
each served document and calls the app, on a real port with its lifespan on the real servers:
every phase (the documents' examples, coverage of each bound, fuzzing, stateful sequences
along the links it infers), 30 examples per operation, deterministic. It checks that no answer
is a server error, that every status and body is the one documented, that a request the
document calls valid is accepted, and that the credential is
not ignored. The operator token drives ``/v1/``; the internal token ``/internal/`` (but for the
admin key states, an endless stream). What no schema can state (a cursor names an item,
``end_time`` after ``start_time``, ``expires_at`` in the future, an admin key's projects
exist) the descriptions say, and ``openapi_rules.py`` teaches the generator.

Two checks are left out, each for a behaviour the APIs keep on purpose or do not own:
``use_after_free`` (a DELETE revokes: the key stays readable, ``status: "revoked"``, as OpenAI's
admin keys do) and ``allow_header_conformance`` (Starlette's 405 names the methods of one
route of a path only).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import schemathesis
from pydantic import SecretStr

from deploy.stack import Endpoints
from services.billing.main import create_app as create_billing
from services.keys.main import create_app as create_keys
from services.metering.main import create_app as create_metering
from tests.keys.harness import ADMIN_TOKEN, AUTH, INTERNAL, INTERNAL_TOKEN, make_settings
from tests.metering.harness import CATALOGUE_YAML, DAY0, EMBED, usage
from tests.metering.ledgers import Case
from tests.polling import eventually
from tests.served import Served

pytestmark = pytest.mark.slow

RULES = Path(__file__).with_name("openapi_rules.py")
EXAMPLES = 30
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "ensure_resource_availability",
)
STREAM = "/internal/v1/admin_key_states"  # endless: a call would never end
PROJECT = "proj_contract"  # the project of the usage events


@dataclass(frozen=True)
class System:
    """The three services, served on ports; a project of the key service's own."""

    urls: dict[str, str]
    project_id: str


async def _drop(database_url: str, names: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for name in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def system(
    endpoints: Endpoints,
    *,
    pg_schema: str,
    topic_prefix: str,
    unique: str,
    redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[System]:
    """Keys, metering and billing with their lifespans, one operator and one internal token
    (metering and billing follow the key service's admin keys); usage of PROJECT on the
    ledgers, so that answers with results are checked too."""
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(CATALOGUE_YAML)
    keys_settings = make_settings(
        kafka=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url,
        schema=pg_schema,
        prefix=topic_prefix,
        group=f"keys-{unique}",
        redis_url=endpoints.redis_url,
        redis_prefix=redis_prefix,
        log_level="WARNING",
    )
    ledgers = (f"m_{unique}", f"b_{unique}")
    case = Case(
        endpoints.kafka_bootstrap, endpoints.database_url, topic_prefix, ledgers, catalogue, unique
    )
    served: list[Served] = []
    try:
        keys = await Served(create_keys(keys_settings)).start()
        served.append(keys)
        metering_settings, billing_settings = case.settings(
            admin_token=ADMIN_TOKEN, internal_token=SecretStr(INTERNAL_TOKEN), keys_url=keys.url
        )
        await case.produce(
            [
                usage(project=PROJECT, at=DAY0 + timedelta(hours=1), cached=10),
                usage(project=PROJECT, key="key_2", model=EMBED, at=DAY0 + timedelta(days=1)),
            ]
        )
        served.append(await Served(create_metering(metering_settings)).start())
        served.append(await Served(create_billing(billing_settings)).start())
        async with httpx.AsyncClient(base_url=keys.url, headers=AUTH) as client:
            answer = await client.post("/v1/projects", json={"name": "contract"})
            assert answer.status_code == 201, answer.text
            project_id = answer.json()["id"]
        urls = dict(zip(("keys", "metering", "billing"), (s.url for s in served), strict=True))
        for name in ("metering", "billing"):
            async with httpx.AsyncClient(base_url=urls[name]) as client:
                await eventually(
                    lambda c=client: c.get("/readyz"),  # type: ignore[misc]
                    until=lambda r: r.json().get("applied") == 2,
                    what=f"{name} applied the usage",
                )
        yield System(urls, project_id)
    finally:
        for server in reversed(served):
            await server.stop()
        await _drop(endpoints.database_url, ledgers)


async def schemathesis_run(
    url: str, token: str, *filters: str, project_id: str, cwd: Path
) -> tuple[int, str]:
    """``st run`` over the document at url with token: its exit status and its report."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(EXAMPLES),
        "--generation-deterministic",  # derandomized: the same cases every run
        "--suppress-health-check",
        "all",
        "--checks",
        ",".join(CHECKS),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        *filters,
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": str(RULES),
        "TOLLGATE_CONTRACT_PROJECT_ID": project_id,
    }
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("service", ["keys", "metering", "billing"])
async def test_schemathesis_finds_nothing(service: str, system: System, tmp_path: Path) -> None:
    url = system.urls[service]
    async with httpx.AsyncClient(base_url=url) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    runs: list[tuple[str, tuple[str, ...]]] = [
        (ADMIN_TOKEN, ("--exclude-path-regex", "^/internal/"))
    ]
    if any(p.startswith("/internal/") and p != STREAM for p in paths):
        internal = ("--include-path-regex", "^/internal/", "--exclude-path", STREAM)
        runs.append((INTERNAL_TOKEN, internal))
    for token, filters in runs:
        status, report = await schemathesis_run(
            url, token, *filters, project_id=system.project_id, cwd=tmp_path
        )
        assert status == 0, report[-20_000:]
        assert "passed" in report, report[-5000:]


async def test_answers_with_results_match_their_documents(system: System) -> None:
    """The usage, costs, total and spend of a project with usage, grouped every way, are what
    the documents say (their bodies are built apart from the models that document them)."""
    range_ = {"start_time": int(DAY0.timestamp()), "end_time": int(DAY0.timestamp()) + 3 * 86400}
    calls: list[tuple[str, str, dict[str, str | int], dict[str, str]]] = [
        ("metering", "/v1/projects/{project_id}/usage", {"group_by": "api_key_id,model"}, AUTH),
        ("metering", "/v1/projects/{project_id}/usage", {"bucket_width": "1h", "limit": 2}, AUTH),
        ("billing", "/v1/projects/{project_id}/costs", {"group_by": "line_item,api_key_id"}, AUTH),
        ("billing", "/v1/projects/{project_id}/costs/total", {}, AUTH),
        ("billing", "/internal/v1/projects/{project_id}/spend", {"since": 0}, INTERNAL),
    ]
    for service, path, params, headers in calls:
        url = system.urls[service]
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            document = (await client.get("/openapi.json")).json()
            query = params if "spend" in path else {**range_, **params}
            answer = await client.get(path.format(project_id=PROJECT), params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if "data" in body:
            assert any(b["results"] for b in body["data"]), body
        operation = schemathesis.openapi.from_dict(document)[path]["GET"]
        operation.validate_response(answer)
