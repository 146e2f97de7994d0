"""What the gateway reads of a request to meter and limit it, checked and forwarded as read.

The fields that decide whether an answer is a stream (so where its usage comes from) and how
much output it may cost (so what a budget or a tokens-per-minute limit reserves) are checked
against the types OpenAI's API gives them: a client's ``"stream": 1`` or ``"max_tokens":
"4096"`` is a 400 in OpenAI's shape, never a value the gateway reads one way and a lenient
upstream (pydantic coerces ``1`` and ``"true"`` to true) another.

Output limits: upstreams honour ``max_completion_tokens`` before ``max_tokens`` (chat,
completions) and ``max_output_tokens`` on responses. The first one set, in that order, is the
gateway's reading; every other limit field the client set is rewritten to that same value in
the body the upstream gets, so whichever field an upstream reads, it reads what was reserved.

    stream, stream_options.include_usage   boolean or null
    max_completion_tokens, max_tokens,     integer >= 1 or null
    max_output_tokens
    n (chat, completions)                  integer 1 to 128 or null
    best_of (completions)                  integer 1 to 20 or null
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shared.errors import BadRequest

_CHOICES_MAX = 128
_BEST_OF_MAX = 20
_OUTPUT_LIMITS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens", "max_output_tokens"),
    "/v1/completions": ("max_completion_tokens", "max_tokens", "max_output_tokens"),
    "/v1/responses": ("max_output_tokens", "max_completion_tokens", "max_tokens"),
    "/v1/embeddings": (),
}
_CHOICE_FIELDS: dict[str, tuple[tuple[str, int], ...]] = {
    "/v1/chat/completions": (("n", _CHOICES_MAX),),
    "/v1/completions": (("n", _CHOICES_MAX), ("best_of", _BEST_OF_MAX)),
    "/v1/responses": (),
    "/v1/embeddings": (),
}
_STREAMING = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    str: "a string",
    list: "an array",
    dict: "an object",
}


class Reading(NamedTuple):
    """The gateway's reading of one request: what the upstream is sent too (a tuple: made on
    every request, and a frozen dataclass costs several times as much to make)."""

    stream: bool = False
    include_usage: bool = False  # the client asked for the stream's usage chunk itself
    max_output: int | None = None  # per choice; None when the client set no limit
    choices: int = 1  # how many outputs one request may produce (n, best_of)

    @property
    def output_limit(self) -> int | None:
        """The most output tokens the whole request may produce; None when unbounded by it."""
        return None if self.max_output is None else self.max_output * self.choices


def _invalid_type(name: str, expected: str, value: object) -> BadRequest:
    got = _TYPE_NAMES.get(type(value), "an object")
    return BadRequest(
        f"Invalid type for '{name}': expected {expected}, but got {got} instead.",
        param=name,
        code="invalid_type",
    )


def _boolean(value: object, name: str) -> bool:
    if value is None:
        return False
    if value is True or value is False:
        return value
    raise _invalid_type(name, "a boolean", value)


def _integer(value: object, name: str, high: int | None = None) -> int:
    """value (not None) as an integer from 1 to high, else the 400 OpenAI gives."""
    if type(value) is not int:  # bool is an int's subclass, not an int
        raise _invalid_type(name, "an integer", value)
    if value < 1:
        raise BadRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if high is not None and value > high:
        raise BadRequest(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def read_fields(payload: dict[str, Any], endpoint: str) -> Reading:
    """The request's stream flag, output limit and choices; a 400 for a field of a wrong type.
    On the hot path: an absent field costs one dict lookup."""
    get = payload.get
    stream = include_usage = False
    if endpoint in _STREAMING:
        stream = _boolean(get("stream"), "stream")
        options = get("stream_options")
        if options is not None:
            if type(options) is not dict:
                raise _invalid_type("stream_options", "an object", options)
            include_usage = _boolean(options.get("include_usage"), "stream_options.include_usage")
    max_output = None
    for name in _OUTPUT_LIMITS[endpoint]:
        value = get(name)
        if value is not None:
            value = _integer(value, name)
            if max_output is None:
                max_output = value
    choices = 1
    for name, high in _CHOICE_FIELDS[endpoint]:
        value = get(name)
        if value is not None:
            choices = max(choices, _integer(value, name, high))
    return Reading(stream, include_usage, max_output, choices)


def forwarded(payload: dict[str, Any], reading: Reading, endpoint: str) -> dict[str, Any]:
    """payload with every output limit the client set equal to the reading's (a copy when
    one differed): an upstream that reads another field than the gateway reads the same."""
    limit = reading.max_output
    if limit is None:
        return payload
    differing = [
        name
        for name in _OUTPUT_LIMITS[endpoint]
        if payload.get(name) is not None and payload[name] != limit
    ]
    if not differing:
        return payload
    return {**payload, **dict.fromkeys(differing, limit)}
