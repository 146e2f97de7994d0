"""The events refuse what Kafka or PostgreSQL could not carry, and what the gateway builds
always passes: every string field is bounded and free of NUL, lone surrogates and controls."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.gateway.usage.event import usage_event
from services.gateway.usage.meter import Usage
from shared import apikeys
from shared.catalogue import Catalogue
from shared.events import (
    KEY_NAME_MAX,
    TOKEN_COUNT_MAX,
    UNKNOWN_MODEL,
    KeyEvent,
    KeyState,
    UsageRecorded,
)
from shared.http import RequestIdMiddleware
from shared.ids import resource_id
from shared.policy import MODEL_MAX

pytestmark = pytest.mark.unit  # no server: `make test-unit`

NUL, SURROGATE, ESC = "a\x00b", "a\ud800b", "a\x1bb"


def _usage(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "occurred_at": datetime.now(UTC),
        "request_id": resource_id("req", 20),
        "project_id": resource_id("proj"),
        "key_id": resource_id("key"),
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "endpoint": "/v1/chat/completions",
        "input_tokens": 3,
        "output_tokens": 5,
        "status_code": 200,
        "latency_ms": 12,
    }
    fields.update(overrides)
    return fields


def _key_event(**overrides: Any) -> dict[str, Any]:
    secret = apikeys.generate()
    fields: dict[str, Any] = {
        "type": "key.created",
        "occurred_at": datetime.now(UTC),
        "key_id": resource_id("key"),
        "project_id": resource_id("proj"),
        "name": "production-app",
        "hint": apikeys.hint(secret),
        "key_hash": apikeys.hash_key(secret),
        "version": 1,
    }
    fields.update(overrides)
    return fields


def _refused(model: type[UsageRecorded | KeyEvent], fields: dict[str, Any]) -> None:
    """Refused when built in Python and when parsed from JSON (escapes as json.dumps writes)."""
    with pytest.raises(ValidationError):
        model.model_validate(fields)
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(fields, default=str))


BAD_USAGE = (
    [
        ("request_id", v)
        for v in (NUL, SURROGATE, ESC, "", "r" * 129, "a b", "abc\n", "caf\u00e9", "a/b")
    ]
    + [
        (field, v)
        for field, prefix in (("project_id", "proj_"), ("key_id", "key_"))
        for v in (
            NUL,
            SURROGATE,
            prefix,
            prefix + "x" * 65,
            prefix + "a-b",
            "other_abc",
            prefix + "é",
        )
    ]
    + [
        ("model", v)
        for v in (NUL, SURROGATE, ESC, "m" * (MODEL_MAX + 1), "a\u200bb", "a\u2028b", "x\x7f")
    ]
    + [("endpoint", v) for v in ("/v1/other", "/v1/chat/completions\x00", "")]
)


@pytest.mark.parametrize(("field", "value"), BAD_USAGE)
def test_usage_event_refuses_bad_strings(field: str, value: str) -> None:
    _refused(UsageRecorded, _usage(**{field: value}))


BAD_KEY = (
    [("name", v) for v in (NUL, SURROGATE, ESC, "", "n" * (KEY_NAME_MAX + 1), "tab\there")]
    + [("hint", v) for v in (NUL, "sk-...abc", "sk-...abcde", "sk-...ab\x00d", "sk-tg-abcd")]
    + [("key_id", v) for v in (SURROGATE, "key_" + "k" * 65, "k")]
    + [("project_id", v) for v in (NUL, "proj_" + "p" * 65)]
)


@pytest.mark.parametrize(("field", "value"), BAD_KEY)
def test_key_event_and_state_refuse_bad_strings(field: str, value: str) -> None:
    _refused(KeyEvent, _key_event(**{field: value}))
    state = {k: v for k, v in _key_event(**{field: value}).items() if k in KeyState.model_fields}
    with pytest.raises(ValidationError):
        KeyState.model_validate(state)


def test_lone_surrogate_escape_is_refused_at_parse_time() -> None:
    # pydantic's JSON parser refuses a lone surrogate escape itself; the validators refuse
    # the same character given from Python (where json.loads would have let it through).
    raw = UsageRecorded.model_validate(_usage()).to_bytes()
    for escape in (rb"\ud800", rb"\udfff", rb"\ud83d"):
        hostile = raw.replace(b'"Qwen/Qwen2.5-0.5B-Instruct"', b'"a' + escape + b'b"')
        assert hostile != raw
        with pytest.raises(ValidationError):
            UsageRecorded.model_validate_json(hostile)
        with pytest.raises(ValidationError):
            UsageRecorded.model_validate(json.loads(hostile))
    nul = raw.replace(b'"Qwen/Qwen2.5-0.5B-Instruct"', b'"a\\u0000b"')
    with pytest.raises(ValidationError):
        UsageRecorded.model_validate_json(nul)


def test_good_events_still_pass_and_round_trip() -> None:
    for model in ("Qwen/Qwen2.5-0.5B-Instruct", UNKNOWN_MODEL, "é" * MODEL_MAX, ""):
        event = UsageRecorded.model_validate(_usage(model=model))
        assert UsageRecorded.model_validate_json(event.to_bytes()) == event
    kept = UsageRecorded.model_validate(_usage(request_id="my-trace.01_A", key_id="key_1"))
    assert kept.request_id == "my-trace.01_A"
    key = KeyEvent.model_validate(_key_event(name="équipe ☃ prod " + "x" * 48))
    assert KeyEvent.model_validate_json(key.to_bytes()) == key


def _state() -> KeyState:
    fields = _key_event()
    return KeyState.model_validate({k: v for k, v in fields.items() if k in KeyState.model_fields})


def test_the_gateway_builds_valid_events_from_anything_an_upstream_reports() -> None:
    state = _state()
    wild = Usage(input_tokens=2**70, output_tokens=2**41, cached_input_tokens=2**70)
    event = usage_event(
        request_id="req_1",
        key=state,
        model="Qwen/Qwen2.5-0.5B-Instruct",
        endpoint="/v1/responses",
        status=999,
        usage=wild,
        latency_s=-1.0,
        stream=True,
    )
    assert (event.input_tokens, event.output_tokens) == (TOKEN_COUNT_MAX, TOKEN_COUNT_MAX)
    assert event.cached_input_tokens <= event.input_tokens
    assert (event.status_code, event.latency_ms) == (502, 0)
    small = usage_event(
        request_id="req_2",
        key=state,
        model=UNKNOWN_MODEL,
        endpoint="/v1/embeddings",
        status=404,
        usage=Usage(input_tokens=3, cached_input_tokens=9, source="estimated"),
        latency_s=0.25,
        stream=False,
    )
    assert (small.cached_input_tokens, small.latency_ms, small.model) == (3, 250, UNKNOWN_MODEL)


def test_an_event_that_would_be_refused_is_still_counted(caplog: pytest.LogCaptureFixture) -> None:
    # Cannot happen through the proxy (it passes catalogue ids only); if it did, the request
    # is counted under the marker rather than lost, and the log says which field.
    with caplog.at_level(logging.ERROR, logger="services.gateway.usage.event"):
        event = usage_event(
            request_id="not a sane id\n",
            key=_state(),
            model="x\x00" * 300,
            endpoint="/v1/chat/completions",
            status=200,
            usage=Usage(input_tokens=4, output_tokens=2),
            latency_s=0.01,
            stream=False,
        )
    assert event.model == UNKNOWN_MODEL
    assert event.request_id.startswith("req_")
    assert (event.input_tokens, event.output_tokens) == (4, 2)
    assert [r.getMessage() for r in caplog.records] == [
        f"usage event refused request_id, model; counted under {UNKNOWN_MODEL}"
    ]
    assert caplog.records[0].exc_info is None


@pytest.mark.parametrize("model_id", [UNKNOWN_MODEL, "", "m\x00", "m" * (MODEL_MAX + 1), "a\nb"])
def test_catalogue_refuses_ids_no_event_could_carry(model_id: str) -> None:
    entry = {"id": model_id, "upstream": {"base_url": "http://127.0.0.1:1/v1"}}
    with pytest.raises(ValidationError):
        Catalogue.model_validate({"models": [entry]})


async def _request_id_for(header: bytes) -> str:
    seen: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["id"] = scope["state"]["request_id"]

    scope = {"type": "http", "headers": [(b"x-request-id", header)]}
    await RequestIdMiddleware(app)(scope, None, None)  # type: ignore[arg-type]
    return seen["id"]


@pytest.mark.parametrize(
    "header", [b"abc\n", b"a" * 129, b"caf\xc3\xa9", b"a b", b"x\x00", b"", b"../x;rm"]
)
async def test_an_odd_request_id_is_replaced(header: bytes) -> None:
    got = await _request_id_for(header)
    assert got != header.decode("latin-1")
    assert got.startswith("req_")
    UsageRecorded.model_validate(_usage(request_id=got))


async def test_a_sane_request_id_is_kept() -> None:
    assert await _request_id_for(b"trace-01.A_b") == "trace-01.A_b"
    assert await _request_id_for(b"r" * 128) == "r" * 128
