"""Property: whatever records are on usage.events, metering and billing never stall, and their
ledgers equal what the valid records say, exactly once (issue 9, the property-based test).

Hypothesis generates sequences of record *specs*: valid usage events, duplicates of earlier
ones (same event id, as a producer retry makes them), and invalid records (a NUL, a lone
surrogate or 4,000+ random characters in a ledger column, written as JSON escapes; wrong
types; negative tokens; cached above input tokens; a required field missing; bytes that are
not JSON). The test body turns each spec into bytes under a project namespace of its own,
sends them across partitions and keys, and demands that:

- the Usage and Costs APIs equal the totals of the distinct valid events (costs are tokens
  times the price book's price at ``occurred_at``), once every offset is stored;
- each invalid record was dead-lettered once by each service, and no batch was retried
  (a retry here would mean a record stalled a consumer);
- neither service says it is stalled.

The invalid ones are invalid whatever the event models accept (the database refuses them,
or no model could), and the valid ones are plain ASCII ids of catalogue models.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.events import UsageRecorded
from tests.metering.harness import CHAT, DAY0, EMBED, both, stats
from tests.metering.ledgers import Case
from tests.metering.poison import noise, send

LEDGER_FIELDS = ("project_id", "key_id", "model")
REQUIRED = ("project_id", "key_id", "model", "occurred_at", "request_id", "status_code")
WRONG_INT = ([1], {"a": 1}, "abc", 1.5, None)  # no mode turns these into an int
WRONG_STR = ([1], {"a": 1}, 1.5, 7, None)  # nor these into a str


@st.composite
def valid_spec(draw: st.DrawFn) -> dict[str, Any]:
    """The fields of a valid event, but its project's namespace and its event id."""
    input_tokens = draw(st.integers(0, 10**6))
    return {
        "project": draw(st.integers(0, 2)),
        "key_id": f"key_{draw(st.integers(0, 3))}",
        "model": draw(st.sampled_from([CHAT, EMBED])),
        "second": draw(st.integers(0, 3 * 86400 - 1)),
        "input_tokens": input_tokens,
        "cached_input_tokens": draw(st.integers(0, input_tokens)) if draw(st.booleans()) else 0,
        "output_tokens": draw(st.integers(0, 10**6)),
        "status_code": draw(st.sampled_from([200, 200, 400, 429, 500])),
        "stream": draw(st.booleans()),
    }


def odd_text(kind: str, draw: st.DrawFn) -> str:
    """A value no ledger column takes: a NUL, a lone surrogate, or random text too long."""
    if kind == "nul":
        return draw(st.sampled_from(["\x00", "a\x00b", "key_1\x00"]))
    if kind == "surrogate":
        return "a" + chr(draw(st.integers(0xD800, 0xDFFF))) + "b"
    return noise(draw(st.integers(4000, 12_000)), seed=draw(st.integers(0, 10**6)))


@st.composite
def bad_spec(draw: st.DrawFn) -> tuple[str, dict[str, Any], Any]:
    """A valid event's fields and one mutation that makes the record invalid for good."""
    base = draw(valid_spec())
    kind = draw(
        st.sampled_from(
            ["nul", "surrogate", "huge", "type", "negative", "cached", "missing", "garbage"]
        )
    )
    if kind in ("nul", "surrogate", "huge"):
        return kind, base, (draw(st.sampled_from(LEDGER_FIELDS)), odd_text(kind, draw))
    if kind == "type":
        field = draw(st.sampled_from(["input_tokens", "output_tokens", "model", "status_code"]))
        wrong = WRONG_STR if field == "model" else WRONG_INT
        return kind, base, (field, draw(st.sampled_from(wrong)))
    if kind == "negative":
        field = draw(st.sampled_from(["input_tokens", "output_tokens", "cached_input_tokens"]))
        return kind, base, (field, -draw(st.integers(1, 10**6)))
    if kind == "cached":
        return kind, base, ("cached_input_tokens", base["input_tokens"] + draw(st.integers(1, 99)))
    if kind == "missing":
        return kind, base, draw(st.sampled_from(REQUIRED))
    return kind, base, draw(st.binary(max_size=40).filter(lambda b: not b.startswith(b"{")))


entry = st.one_of(
    st.tuples(st.just("valid"), valid_spec()),
    st.tuples(st.just("dup"), st.integers(0, 10**6)),
    st.tuples(st.just("bad"), bad_spec()),
)


def event(tag: str, spec: dict[str, Any]) -> UsageRecorded:
    return UsageRecorded(
        occurred_at=DAY0 + timedelta(seconds=spec["second"]),
        request_id=f"req_{uuid.uuid4().hex[:16]}",
        project_id=f"proj_fz{tag}_{spec['project']}",
        key_id=spec["key_id"],
        model=spec["model"],
        endpoint="/v1/chat/completions",
        input_tokens=spec["input_tokens"],
        output_tokens=spec["output_tokens"],
        cached_input_tokens=spec["cached_input_tokens"],
        status_code=spec["status_code"],
        latency_ms=12,
        stream=spec["stream"],
    )


def bad_record(tag: str, bad: tuple[str, dict[str, Any], Any]) -> bytes:
    """The bytes of an invalid record: JSON with escapes (NUL, surrogates) or plain garbage."""
    kind, base, change = bad
    if kind == "garbage":
        value: bytes = change
        return value
    body = event(tag, base).model_dump(mode="json")
    if kind == "missing":
        del body[change]
    else:
        field, new = change
        body[field] = new
        if kind in ("nul", "surrogate", "huge"):
            # Billing stores nothing for a request without tokens, so it would never meet
            # the bad value; with a token it must price the record, and refuse it.
            body["input_tokens"] += 1
    return json.dumps(body).encode()  # ensure_ascii: \u0000 and \ud800 as escapes


@dataclass
class Running:
    case: Case
    m: httpx.AsyncClient
    b: httpx.AsyncClient


@pytest.fixture
async def services(case: Case) -> AsyncIterator[Running]:
    """One metering and one billing replica for every example (each has its own projects)."""
    m_set, b_set = case.settings(max_batch=64)
    async with both(m_set, b_set) as (m, b):
        yield Running(case, m, b)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: bounded run time
    suppress_health_check=(
        HealthCheck.function_scoped_fixture,  # the services are shared by the examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ),
)
@given(entries=st.lists(entry, min_size=150, max_size=400))
async def test_ledgers_equal_the_valid_records_whatever_else_comes(
    services: Running, entries: list[tuple[str, Any]]
) -> None:
    case, m, b = services.case, services.m, services.b
    before = [await stats(m), await stats(b)]
    tag = uuid.uuid4().hex[:8]
    valid: list[UsageRecorded] = []
    records: list[tuple[bytes, bytes]] = []
    invalid = 0
    for kind, spec in entries:
        if kind == "valid":
            valid.append(event(tag, spec))
            records.append((valid[-1].key_id.encode(), valid[-1].to_bytes()))
        elif kind == "dup" and valid:
            again = valid[spec % len(valid)]
            records.append((again.key_id.encode(), again.to_bytes()))
        elif kind == "bad":
            records.append((spec[1]["key_id"].encode(), bad_record(tag, spec)))
            invalid += 1
    await send(case.bootstrap, case.topic, records)
    # A request that used no tokens costs nothing, and billing writes no row for it.
    billed = [e for e in valid if e.input_tokens or e.output_tokens]
    await case.assert_ledgers(m, b, valid, billed, timeout=30)
    after = [await stats(m), await stats(b)]
    for was, now in zip(before, after, strict=True):
        assert now["dead_letters"] - was["dead_letters"] == invalid, (was, now)
        assert now["db_retries"] == was["db_retries"], now
        assert now["applied"] - was["applied"] == len({e.event_id for e in valid}), (was, now)
        assert (now["status"], now["stalled"], now["dead_letters_lost"]) == ("ok", False, 0), now
