"""What the hostile-input tests check beyond the answers: the logs the gateway wrote, and
the ledgers the real metering and billing consumers hold (read back through their APIs)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from deploy.stack import Endpoints
from shared.events import utc_now
from shared.topics import USAGE_EVENTS_DLQ
from tests.gateway.harness import CHAT
from tests.metering.harness import AUTH, both
from tests.metering.ledgers import Case, end_offsets
from tests.polling import eventually


@dataclass
class Ledger:
    """What metering and billing must hold, from the answers the clients were given."""

    tokens: dict[tuple[str, str, str], list[int]]
    costs: dict[tuple[str, str, str], Decimal]

    @classmethod
    def empty(cls) -> Ledger:
        return cls(defaultdict(lambda: [0, 0, 0, 0, 0]), defaultdict(Decimal))

    def refused(self, project: str, key: str, model: str) -> None:
        row = self.tokens[(project, key, model)]
        row[0] += 1
        row[4] += 1

    def answered(self, project: str, key: str, usage: dict[str, Any]) -> None:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        row = self.tokens[(project, key, CHAT)]
        row[0] += 1
        row[1] += usage["prompt_tokens"]
        row[2] += cached
        row[3] += usage["completion_tokens"]
        # The test catalogue: 0.1 per million input (cached too: no cached price), 0.2 output.
        amount = usage["prompt_tokens"] * Decimal("0.1") + usage["completion_tokens"] * Decimal(
            "0.2"
        )
        self.costs[(project, key, CHAT)] += amount / Decimal(1_000_000)


# The gateway's own loggers, and uvicorn's under it (asyncio's complaints about another test's
# leftovers, collected meanwhile, are not the gateway's).
_GATEWAY_LOGGERS = ("services.", "shared.", "uvicorn")


@contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record the in-process gateway (and uvicorn under it) logs meanwhile."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith(_GATEWAY_LOGGERS):
                records.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def loud(records: list[logging.LogRecord]) -> list[str]:
    """The errors and tracebacks among records (none is wanted for anything a client sends)."""
    return [r.getMessage()[:200] for r in records if r.levelno >= logging.ERROR or r.exc_info]


async def usage_api(m: httpx.AsyncClient, project: str) -> dict[tuple[str, str, str], list[int]]:
    now = utc_now()
    params: dict[str, str | int] = {
        "start_time": int((now - timedelta(days=1)).timestamp()),
        "end_time": int((now + timedelta(minutes=5)).timestamp()),
        "bucket_width": "1d",
        "group_by": "api_key_id,model",
    }
    r = await m.get(f"/v1/projects/{project}/usage", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    out: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for bucket in r.json()["data"]:
        for res in bucket["results"]:
            row = out[(project, res["api_key_id"], res["model"])]
            row[0] += res["num_model_requests"]
            row[1] += res["input_tokens"]
            row[2] += res["input_cached_tokens"]
            row[3] += res["output_tokens"]
            row[4] += res["num_errors"]
    return dict(out)


async def costs_api(b: httpx.AsyncClient, project: str) -> dict[tuple[str, str, str], Decimal]:
    now = utc_now()
    params: dict[str, str | int] = {
        "start_time": int((now - timedelta(days=1)).timestamp()),
        "end_time": int((now + timedelta(minutes=5)).timestamp()),
        "group_by": "api_key_id,model",
    }
    r = await b.get(f"/v1/projects/{project}/costs", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    out: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for bucket in json.loads(r.text, parse_float=Decimal)["data"]:
        for res in bucket["results"]:
            out[(project, res["api_key_id"], res["model"])] += Decimal(res["amount"]["value"])
    return dict(out)


async def assert_counted_exactly(
    *,
    endpoints: Endpoints,
    prefix: str,
    schemas: tuple[str, str],
    catalogue: Path,
    unique: str,
    want: Ledger,
) -> None:
    """The real metering and billing consume the topic; their APIs equal the answers given,
    every offset is stored, and nothing went to the dead-letter topic."""
    case = Case(
        endpoints.kafka_bootstrap, endpoints.database_url, prefix, schemas, catalogue, unique
    )
    projects = sorted({k[0] for k in want.tokens})
    expected = (dict(want.tokens), {k: v for k, v in want.costs.items() if v})
    async with both(*case.settings()) as (m, b):

        async def probe() -> tuple[dict[Any, list[int]], dict[Any, Decimal]]:
            tokens: dict[Any, list[int]] = {}
            costs: dict[Any, Decimal] = {}
            for project in projects:
                tokens.update(await usage_api(m, project))
                costs.update(await costs_api(b, project))
            return tokens, costs

        await eventually(probe, until=lambda got: got == expected, timeout=60, what="ledgers")
        await eventually(case.drained, timeout=60, what="every offset stored")
        assert await probe() == expected
    dlq = await end_offsets(endpoints.kafka_bootstrap, prefix + USAGE_EVENTS_DLQ)
    assert not any(dlq.values()), f"dead letters: {dlq}"
