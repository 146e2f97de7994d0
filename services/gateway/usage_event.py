"""Building the usage event so that it cannot fail: a validation error here would lose it.

Every field is bounded before the model sees it: the model is a catalogue id or
``UNKNOWN_MODEL`` (the proxy sees to that), token counts are clamped to what the event takes
(an upstream may report anything), cached input never exceeds input (metering refuses that),
and the status is a real HTTP status. Should the event still refuse a field, the request is
counted all the same, under the unknown-model marker and a fresh request id.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from services.gateway.usage import Usage
from shared.events import (
    TOKEN_COUNT_MAX,
    UNKNOWN_MODEL,
    Endpoint,
    KeyState,
    UsageRecorded,
    utc_now,
)
from shared.ids import resource_id

log = logging.getLogger(__name__)


def _tokens(count: int) -> int:
    return min(max(count, 0), TOKEN_COUNT_MAX)


def usage_event(
    *,
    request_id: str,
    key: KeyState,
    model: str,
    endpoint: Endpoint,
    status: int,
    usage: Usage,
    latency_s: float,
    stream: bool,
) -> UsageRecorded:
    """The usage event of one request, with every field inside the event's bounds."""
    input_tokens = _tokens(usage.input_tokens)
    fields = {
        "occurred_at": utc_now(),
        "project_id": key.project_id,
        "key_id": key.key_id,
        "endpoint": endpoint,
        "input_tokens": input_tokens,
        "output_tokens": _tokens(usage.output_tokens),
        "cached_input_tokens": min(_tokens(usage.cached_input_tokens), input_tokens),
        "status_code": status if 100 <= status <= 599 else 502,
        "latency_ms": max(0, int(latency_s * 1000)),
        "stream": stream,
        "usage_source": usage.source,
    }
    try:
        return UsageRecorded.model_validate({**fields, "request_id": request_id, "model": model})
    except ValidationError as exc:
        log.error(  # noqa: TRY400 - one line: the fields say it all, no traceback wanted
            "usage event refused %s; counted under %s",
            ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()),
            UNKNOWN_MODEL,
        )
        return UsageRecorded.model_validate(
            {**fields, "request_id": resource_id("req", 20), "model": UNKNOWN_MODEL}
        )
