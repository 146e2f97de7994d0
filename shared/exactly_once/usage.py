"""A ``usage.events`` record into a usage event, or ``Poison`` saying why it cannot be one.

What every ledger refuses: a tombstone, a record that is not a valid ``UsageRecorded`` (the
event model's own bounds), one without an ``event_id`` (the model would make one up, and a
redelivery would count again), and cached input tokens above the input tokens (they are a part
of them). A service adds its own refusals on top (billing: a model without a price).

Pydantic's validation was the largest part of a ledger's CPU per event (6 µs of about 10). A
record in the one form Tollgate's producers write (every field present, each of its exact JSON
type, ids and times in their canonical spelling) is checked field by field here against the
same bounds and built without a second validation (``_canonical``, about 2.5 µs). Anything
else, however slightly off, goes to pydantic, which decides: this path accepts only what the
model accepts, with the same values (``tests/metering/test_usage_parse.py`` holds them equal
over every field and thousands of hostile variants).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from shared.events import TOKEN_COUNT_MAX, UPSTREAM_ENDPOINT_MAX, UsageRecorded
from shared.exactly_once.types import Poison
from shared.ids import KEY_ID_CHARS, PROJECT_ID_CHARS, REQUEST_ID_CHARS
from shared.policy import MODEL_MAX

_FIELDS = frozenset(UsageRecorded.model_fields)
_ENDPOINTS = frozenset(
    ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings")
)
_SOURCES = frozenset(("upstream", "estimated"))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z")
_REQUEST_ID = re.compile(REQUEST_ID_CHARS)
_KEY_ID = re.compile(KEY_ID_CHARS)
_PROJECT_ID = re.compile(PROJECT_ID_CHARS)
_TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens")


def parse_usage(value: bytes | None) -> UsageRecorded:
    """A usage event from a record's bytes, or Poison saying why it cannot be one."""
    if value is None:
        raise Poison("empty record (tombstone)")
    event = _canonical(value)
    if event is None:
        try:
            event = UsageRecorded.model_validate_json(value)
        except ValidationError as exc:
            raise Poison.invalid(exc) from None
        if "event_id" not in event.model_fields_set:
            # The model would make one up, a new one at each delivery: never deduplicated.
            raise Poison("invalid usage event: no event_id, so a redelivery would count again")
    if event.cached_input_tokens > event.input_tokens:
        raise Poison("invalid usage event: cached_input_tokens exceeds input_tokens")
    return event


def _canonical(value: bytes) -> UsageRecorded | None:
    """The event, when the record is in the producers' exact form and within every bound;
    None for anything else (pydantic then decides)."""
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(raw) is not dict or raw.keys() != _FIELDS:
        return None
    fields: dict[str, Any] = raw
    if not (
        _int(fields["schema_version"], -(2**63), 2**63 - 1)
        and _int(fields["status_code"], 100, 599)
        and _int(fields["latency_ms"], 0, 2**63 - 1)
        and all(_int(fields[name], 0, TOKEN_COUNT_MAX) for name in _TOKENS)
        and type(fields["stream"]) is bool
        and _text_in(fields["endpoint"], _ENDPOINTS)
        and _text_in(fields["usage_source"], _SOURCES)
        and _matches(fields["request_id"], _REQUEST_ID)
        and _matches(fields["key_id"], _KEY_ID)
        and _matches(fields["project_id"], _PROJECT_ID)
        and _printable(fields["model"], 0, MODEL_MAX)
        and (
            fields["upstream_endpoint"] is None
            or _printable(fields["upstream_endpoint"], 1, UPSTREAM_ENDPOINT_MAX)
        )
        and _matches(fields["event_id"], _UUID)
        and _matches(fields["occurred_at"], _TIME)
    ):
        return None
    try:
        occurred_at = datetime.fromisoformat(fields["occurred_at"])
    except ValueError:  # a day or an hour out of range
        return None
    return UsageRecorded.model_construct(
        **{**fields, "event_id": uuid.UUID(fields["event_id"]), "occurred_at": occurred_at}
    )


def _int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _text_in(value: object, allowed: frozenset[str]) -> bool:
    return type(value) is str and value in allowed


def _matches(value: object, pattern: re.Pattern[str]) -> bool:
    return type(value) is str and pattern.fullmatch(value) is not None


def _printable(value: object, shortest: int, longest: int) -> bool:
    return type(value) is str and shortest <= len(value) <= longest and value.isprintable()
