"""The usage event as the proxy writes it (orjson from bounded fields) is byte for byte what
the validated model would put on the topic, and anything the model would refuse takes the
validated path with its fallback."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.gateway.usage.event import usage_event, usage_message
from services.gateway.usage.meter import Usage
from shared.events import TOKEN_COUNT_MAX, UNKNOWN_MODEL, KeyState, UsageRecorded
from shared.ids import resource_id
from tests.gateway.harness import new_key

pytestmark = pytest.mark.unit  # no server: `make test-unit`

_CASES: dict[str, dict[str, Any]] = {
    "chat": {"usage": Usage(12, 8, 4)},
    "stream cut short": {"usage": Usage(3, 2, 0, "estimated"), "stream": True},
    "embeddings": {"endpoint": "/v1/embeddings", "usage": Usage(7), "latency_s": 1.2345},
    "wild upstream": {
        "usage": Usage(2**70, -5, 2**70),
        "status": 999,
        "latency_s": -1.0,
    },
    "true as a count": {"usage": Usage(True, True, False)},  # an upstream's JSON true
    "unknown model": {"model": UNKNOWN_MODEL, "status": 404, "usage": Usage(source="estimated")},
    "unicode model": {"model": "équipe/modèle-☃"},
    "caller's request id": {"request_id": "my-trace.01_A"},
    "longest request id": {"request_id": "r" * 128},
}


def _args(key: KeyState, **overrides: Any) -> dict[str, Any]:
    return {
        "request_id": resource_id("req", 20),
        "key": key,
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "endpoint": "/v1/chat/completions",
        "status": 200,
        "usage": Usage(),
        "latency_s": 0.05,
        "stream": False,
    } | overrides


@pytest.mark.parametrize("case", _CASES)
def test_the_written_event_is_what_the_model_would_write(case: str) -> None:
    _, key = new_key()
    args = _args(key, **_CASES[case])
    before = datetime.now(UTC)
    message_key, value = usage_message(**args)
    assert message_key == key.key_id.encode()
    event = UsageRecorded.model_validate_json(value)  # what metering reads
    assert event.to_bytes() == value  # pydantic writes the very same bytes
    assert before <= event.occurred_at <= datetime.now(UTC)
    assert uuid.UUID(str(event.event_id)).version == 7
    expected = usage_event(**args)  # the validated path, field by field
    ignored = {"event_id", "occurred_at"}
    assert event.model_dump(exclude=ignored) == expected.model_dump(exclude=ignored)
    assert event.input_tokens <= TOKEN_COUNT_MAX
    assert type(event.input_tokens) is int


@pytest.mark.parametrize(
    ("field", "value"),
    [("request_id", "not a sane id\n"), ("request_id", "r" * 129), ("model", "x\x00y")],
)
def test_what_the_model_would_refuse_is_counted_under_the_marker(
    field: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = new_key()
    with caplog.at_level(logging.ERROR, logger="services.gateway.usage.event"):
        _, written = usage_message(**_args(key, usage=Usage(4, 2), **{field: value}))
    event = UsageRecorded.model_validate_json(written)
    assert (event.model, event.input_tokens, event.output_tokens) == (UNKNOWN_MODEL, 4, 2)
    assert event.request_id.startswith("req_")
    assert [r.getMessage() for r in caplog.records] == [
        f"usage event refused {field}; counted under {UNKNOWN_MODEL}"
    ]


def test_every_event_has_an_id_of_its_own_in_time_order() -> None:
    _, key = new_key()
    ids = [
        UsageRecorded.model_validate_json(usage_message(**_args(key))[1]).event_id
        for _ in range(200)
    ]
    assert len(set(ids)) == len(ids)
    assert [i.bytes[:6] for i in ids] == sorted(i.bytes[:6] for i in ids)  # ms timestamps
