"""The gateway's reading of the fields that decide metering and limits (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.request.fields import Reading, forwarded, read_fields
from shared.errors import BadRequest

pytestmark = pytest.mark.unit  # no server: `make test-unit`

CHAT = "/v1/chat/completions"


def _refused(payload: dict[str, Any], endpoint: str = CHAT) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        read_fields(payload, endpoint)
    return caught.value


@pytest.mark.parametrize("value", [1, 0, "true", "yes", "false", 1.0, [], {}])
def test_stream_is_a_boolean_or_nothing(value: object) -> None:
    for endpoint in (CHAT, "/v1/completions", "/v1/responses"):
        error = _refused({"stream": value}, endpoint)
        assert (error.status_code, error.param) == (400, "stream")
        assert error.instance_code == "invalid_type"
        assert "expected a boolean" in str(error.body()["error"]["message"])
    assert read_fields({"stream": True}, CHAT).stream
    assert not read_fields({"stream": None}, CHAT).stream
    assert not read_fields({"stream": False}, CHAT).stream
    # Embeddings have no stream: the field is not theirs to read.
    assert not read_fields({"stream": 1}, "/v1/embeddings").stream


def test_stream_options_is_an_object_with_a_boolean() -> None:
    assert _refused({"stream": True, "stream_options": "yes"}).param == "stream_options"
    error = _refused({"stream": True, "stream_options": {"include_usage": 1}})
    assert error.param == "stream_options.include_usage"
    reading = read_fields({"stream": True, "stream_options": {"include_usage": True}}, CHAT)
    assert reading.include_usage
    assert not read_fields({"stream": True, "stream_options": None}, CHAT).include_usage


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
@pytest.mark.parametrize("value", ["10", 1.5, True, [], 0, -1])
def test_output_limits_are_positive_integers(name: str, value: object) -> None:
    for endpoint in (CHAT, "/v1/completions", "/v1/responses"):
        error = _refused({name: value}, endpoint)
        assert error.param == name
        assert error.instance_code in {"invalid_type", "integer_below_min_value"}


@pytest.mark.parametrize(
    ("payload", "limit"),
    [
        ({}, None),
        ({"max_tokens": 10}, 10),
        ({"max_tokens": 1, "max_completion_tokens": 4096}, 4096),  # upstreams take the latter
        ({"max_tokens": 4096, "max_completion_tokens": 1}, 1),
        ({"max_output_tokens": 7}, 7),
        ({"max_tokens": None, "max_completion_tokens": 3}, 3),
        ({"max_tokens": 10, "n": 3}, 30),
    ],
)
def test_the_output_limit_is_the_field_upstreams_honour_first_times_n(
    payload: dict[str, Any], limit: int | None
) -> None:
    assert read_fields(payload, CHAT).output_limit == limit


def test_responses_honour_max_output_tokens_first() -> None:
    reading = read_fields({"max_output_tokens": 50, "max_tokens": 5}, "/v1/responses")
    assert reading.output_limit == 50
    assert read_fields({"n": 0}, "/v1/responses") == Reading()  # not a responses field


@pytest.mark.parametrize("value", [0, 129, "2", 2.0, True])
def test_n_is_an_integer_from_1_to_128(value: object) -> None:
    assert _refused({"n": value}).param == "n"
    assert _refused({"n": value}, "/v1/completions").param == "n"


def test_best_of_counts_as_choices_on_completions() -> None:
    reading = read_fields({"max_tokens": 10, "n": 2, "best_of": 5}, "/v1/completions")
    assert reading.output_limit == 50
    assert _refused({"best_of": 21}, "/v1/completions").param == "best_of"


def test_every_limit_field_the_upstream_gets_says_what_was_reserved() -> None:
    payload = {"max_tokens": 1, "max_completion_tokens": 4096, "max_output_tokens": None}
    reading = read_fields(payload, CHAT)
    sent = forwarded(payload, reading, CHAT)
    assert sent == {"max_tokens": 4096, "max_completion_tokens": 4096, "max_output_tokens": None}
    assert payload["max_tokens"] == 1  # the client's payload itself is left as it came
    same = {"max_tokens": 5}
    assert forwarded(same, read_fields(same, CHAT), CHAT) is same
