"""A ``usage.events`` record into a usage event, or ``Poison`` saying why it cannot be one.

What every ledger refuses: a tombstone, a record that is not a valid ``UsageRecorded`` (the
event model's own bounds), one without an ``event_id`` (the model would make one up, and a
redelivery would count again), and cached input tokens above the input tokens (they are a part
of them). A service adds its own refusals on top (billing: a model without a price).
"""

from __future__ import annotations

from pydantic import ValidationError

from shared.events import UsageRecorded
from shared.exactly_once.types import Poison


def parse_usage(value: bytes | None) -> UsageRecorded:
    """A usage event from a record's bytes, or Poison saying why it cannot be one."""
    if value is None:
        raise Poison("empty record (tombstone)")
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
