"""The ledgers' parse: what pydantic makes of a record, plus the ledgers' own refusals (no
event_id, cached input above input), for the producers' form and every hostile variant of each
field; a faster parse must keep these equal. No servers."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import TOKEN_COUNT_MAX, UsageRecorded
from shared.exactly_once import Poison, parse_usage

pytestmark = pytest.mark.unit


def event(rng: random.Random) -> UsageRecorded:
    return UsageRecorded(
        occurred_at=datetime(2026, 12, 8, tzinfo=UTC)
        + timedelta(microseconds=rng.randrange(10**11) * rng.choice([0, 1])),
        request_id=rng.choice(["req_abc", "a.b-c_D", "x" * 128]),
        project_id=rng.choice(["proj_a", "proj_" + "Z9_" * 21]),
        key_id=rng.choice(["key_1", "key_" + "a" * 64]),
        model=rng.choice(["Qwen/Qwen2.5-0.5B-Instruct", "(unknown)", "", "m" * 256, "é 模型"]),
        endpoint=rng.choice(["/v1/chat/completions", "/v1/embeddings", "/v1/responses"]),
        input_tokens=rng.choice([0, 1, 12345, TOKEN_COUNT_MAX]),
        output_tokens=rng.choice([0, 7, TOKEN_COUNT_MAX]),
        cached_input_tokens=0,
        status_code=rng.choice([100, 200, 429, 499, 599]),
        latency_ms=rng.choice([0, 40, 10**12]),
        stream=rng.random() < 0.5,
        usage_source=rng.choice(["upstream", "estimated"]),
        upstream_endpoint=rng.choice([None, "http://10.0.0.1:8000/v1", "h" * 512]),
    )


def outcome(value: bytes) -> tuple[str, Any]:
    """What a ledger makes of the record: the event's fields, or the refusal."""
    try:
        parsed = parse_usage(value)
    except Poison as exc:
        return "poison", exc.reason
    return "event", (parsed.model_dump(), parsed.occurred_at.utcoffset())


def reference(value: bytes) -> tuple[str, Any]:
    """The same, by pydantic alone."""
    try:
        parsed = UsageRecorded.model_validate_json(value)
    except Exception:
        return "poison", None
    if parsed.cached_input_tokens > parsed.input_tokens:
        return "poison", None
    if "event_id" not in parsed.model_fields_set:
        return "poison", None
    return "event", (parsed.model_dump(), parsed.occurred_at.utcoffset())


def _dumps(fields: Any) -> bytes:
    """JSON as any producer might write it (big integers, escaped lone surrogates)."""
    return json.dumps(fields).encode()


def same(value: bytes) -> None:
    got, want = outcome(value), reference(value)
    assert got[0] == want[0], value
    if got[0] == "event":
        assert got == want, value


def test_the_producers_form_is_parsed_as_pydantic_parses_it() -> None:
    rng = random.Random(26)
    for _ in range(2_000):
        value = event(rng).to_bytes()
        assert outcome(value)[0] == "event"
        same(value)


HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1.0, 1.5, 2**63, -(2**63) - 1, TOKEN_COUNT_MAX + 1, "", "1",
    "200", " 200", "true", "null", [], {}, "\x00", "\ud7ff", "é", "A" * 600, "key_1\n",
    "key_1 ", "KEY_1", "proj_a\x00", "01A25359-CBD1-73FE-A6E6-500E0C76A755",
    "01a25359cbd173fea6e6500e0c76a755", "{01a25359-cbd1-73fe-a6e6-500e0c76a755}",
    "2026-12-08T01:52:03Z", "2026-12-08T01:52:03.5Z", "2026-12-08T01:52:03.537370+00:00",
    "2026-12-08T01:52:03.537370", "2026-02-30T01:52:03Z", "2026-12-08T24:00:00Z",
    "2026-12-08T23:59:60Z", "2026-12-08 01:52:03Z", "2026-12-08T01:52:03.5373701Z",
    "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z", "/v1/chat/completions ",
    "/v1/models", "upstream ", "ESTIMATED", "http://h/v1\t", "\u200b", "\u2028",
]  # fmt: skip


def test_every_field_with_hostile_values_is_decided_as_pydantic_decides() -> None:
    base = json.loads(event(random.Random(1)).to_bytes())
    for name in base:
        for bad in HOSTILE:
            same(_dumps({**base, name: bad}))


def test_missing_extra_duplicate_and_malformed_records_are_pydantic_s() -> None:
    rng = random.Random(2)
    base = event(rng).to_bytes()
    fields = json.loads(base)
    for name in fields:
        same(_dumps({k: v for k, v in fields.items() if k != name}))  # missing
    no_id = _dumps({k: v for k, v in fields.items() if k != "event_id"})
    assert "no event_id" in outcome(no_id)[1]
    same(_dumps({**fields, "extra": 1}))
    same(base[:-1] + b', "model": "other"}')  # a duplicate key: the last wins, as pydantic
    same(base[:-1] + b', "status_code": "500"}')
    for broken in (b"", b"[]", b"null", b"{", base[:-2], b"\xff" + base, base + b"x"):
        same(broken)
    same(base.replace(b'"model":"', b'"model":"\\ud800'))  # a lone surrogate, escaped
    same(base.replace(b'"model":"', b'"model":"\\u0000'))
    cached = _dumps({**fields, "input_tokens": 1, "cached_input_tokens": 2})
    assert outcome(cached) == (
        "poison",
        "invalid usage event: cached_input_tokens exceeds input_tokens",
    )
    assert (
        outcome(_dumps({**fields, "stream": "true"}))[0]
        == reference(_dumps({**fields, "stream": "true"}))[0]
    )
