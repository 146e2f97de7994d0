"""The request body read from the ASGI messages: pieces joined, the bound kept across them,
a client gone mid-upload told apart, values counted before parsing, large bodies taking
turns (pure logic: messages from a list, no server)."""

from __future__ import annotations

import asyncio
import tracemalloc

import orjson
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.gateway.errors import LargeBodiesBusy, PayloadTooLarge, TooManyJsonValues
from services.gateway.request.body import Body, BodyBudget, BodyLimits, read_body

pytestmark = pytest.mark.unit  # no server: `make test-unit`


async def _read(
    request: Request,
    max_bytes: int,
    *,
    max_values: int = 500_000,
    memory_ratio: int = 8,
    large_bytes: int = 1 << 20,
    budget: BodyBudget | None = None,
) -> Body:
    limits = BodyLimits(max_bytes, max_values, memory_ratio, large_bytes)
    return await read_body(request, limits, budget or BodyBudget(64 << 20, 1.0))


def _request(
    messages: list[Message], content_length: int | None = None
) -> tuple[Request, list[Message]]:
    sent = list(messages)
    taken: list[Message] = []

    async def receive() -> Message:
        message = sent.pop(0)
        taken.append(message)
        return message

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    return Request(scope, receive), taken


def _pieces(body: bytes, size: int) -> list[Message]:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]


async def test_a_body_in_many_messages_is_read_whole() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'
    request, taken = _request(_pieces(body, 700))
    read = await _read(request, 1 << 20)
    assert read.size == len(body)
    assert read.payload == orjson.loads(body)
    assert len(taken) == len(_pieces(body, 700))


async def test_a_body_past_the_bound_over_several_messages_is_413_after_reading_on() -> None:
    body = b'{"input": "' + b"y" * 3000 + b'"}'
    request, taken = _request([*_pieces(body, 500), {"type": "http.disconnect"}])
    with pytest.raises(PayloadTooLarge):
        await _read(request, 1000)
    # Read on to twice the bound (so the client sees the 413), not to the end.
    assert sum(len(m.get("body", b"")) for m in taken) == 2500


async def test_a_client_gone_mid_upload_is_a_disconnect_not_a_bad_body() -> None:
    request, _ = _request(
        [
            {"type": "http.request", "body": b'{"model": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    with pytest.raises(ClientDisconnect):
        await _read(request, 1 << 20)


async def test_an_empty_body_is_not_json() -> None:
    request, _ = _request([{"type": "http.request", "body": b"", "more_body": False}])
    with pytest.raises(Exception, match="JSON") as caught:
        await _read(request, 1 << 20)
    assert getattr(caught.value, "status_code", None) == 400


async def test_a_body_of_tiny_values_is_refused_before_it_is_parsed() -> None:
    # 32 MiB of [{},{},...] parsed would take ~800 MB; refused having taken next to nothing.
    body = b"[" + b",".join([b"{}"] * (11 << 20)) + b"]"
    request, _ = _request(_pieces(body, 1 << 20), len(body))
    tracemalloc.start()
    try:
        with pytest.raises(TooManyJsonValues):
            await _read(request, 64 << 20, large_bytes=64 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The body, read once, and its bytes of structure picked out once to be counted.
    assert peak < 4 * len(body)


async def test_values_are_counted_outside_strings_when_the_first_count_is_over() -> None:
    small = orjson.dumps({"input": [{}] * 90})
    read = await _read(_request(_pieces(small, 1 << 20))[0], 1 << 20, max_values=200)
    assert len(read.payload["input"]) == 90
    # 300 commas, all inside one string: counted again with the string emptied, it passes.
    text = orjson.dumps({"input": "a, b, c, " * 100})
    read = await _read(_request(_pieces(text, 1 << 20))[0], 1 << 20, max_values=150)
    assert read.payload["input"].startswith("a, b")
    many = orjson.dumps({"input": [{}] * 151})
    with pytest.raises(TooManyJsonValues):
        await _read(_request(_pieces(many, 1 << 20))[0], 1 << 20, max_values=150)


async def test_large_bodies_take_turns_and_give_back_what_they_held_on_failure() -> None:
    budget = BodyBudget(3000, 0.2)
    body = orjson.dumps({"input": "z" * 1990})
    first = await _read(
        _request(_pieces(body, 500), len(body))[0], 1 << 20, large_bytes=1000, budget=budget
    )
    assert (first.held, budget.used) == (len(body), len(body))
    # A second does not fit beside it: it waits, then gets 503, holding nothing.
    with pytest.raises(LargeBodiesBusy):
        await _read(
            _request(_pieces(body, 500), len(body))[0], 1 << 20, large_bytes=1000, budget=budget
        )
    assert budget.used == len(body)
    # Given back while a third waits: the third goes.
    third = asyncio.ensure_future(
        _read(_request(_pieces(body, 500), len(body))[0], 1 << 20, large_bytes=1000, budget=budget)
    )
    await asyncio.sleep(0.05)
    assert not third.done()
    budget.give(first.held)
    assert (await third).held == len(body)
    budget.give(len(body))
    # A body that is not JSON gives back its share at once.
    bad = b"{" + b"x" * 1500
    with pytest.raises(Exception, match="JSON"):
        await _read(
            _request(_pieces(bad, 500), len(bad))[0], 1 << 20, large_bytes=1000, budget=budget
        )
    assert budget.used == 0


async def test_a_large_body_without_a_length_is_counted_as_the_largest_it_may_be() -> None:
    budget = BodyBudget(1 << 30, 1.0)
    body = orjson.dumps({"input": "c" * 5000})
    read = await _read(_request(_pieces(body, 1000))[0], 1 << 20, large_bytes=2000, budget=budget)
    assert read.held == budget.used == 1 << 20


async def test_a_body_larger_than_the_whole_budget_goes_alone() -> None:
    budget = BodyBudget(100, 0.1)
    await budget.take(500)
    with pytest.raises(LargeBodiesBusy):
        await budget.take(1)
    budget.give(500)
    await budget.take(1)
    assert budget.used == 1


_SHAPES = {
    "objects": b"{}",
    "arrays": b"[]",
    "members": b'{"a":0}',
    "small ints": b"7",
    "token ids": b"99061",
    "floats": b"1.5",
    "short strings": b'"ab"',
    "nested": b'[[{"k":[1,2]}]]',
}


@pytest.mark.parametrize("shape", list(_SHAPES))
async def test_whatever_a_body_holds_its_parse_stays_within_its_bound(shape: str) -> None:
    # Each shape alone, as many as 2 MiB holds: refused, or parsed within 8 times its size
    # plus 1 MiB (the bound's allowance).
    item = _SHAPES[shape]
    body = b'{"input": [' + b",".join([item] * ((2 << 20) // (len(item) + 1))) + b"]}"
    request, _ = _request(_pieces(body, 1 << 20), len(body))
    tracemalloc.start()
    try:
        try:
            read = await _read(request, 4 << 20, large_bytes=4 << 20)
        except TooManyJsonValues:
            assert shape != "token ids"
            return
        parsed, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shape not in {"objects", "arrays", "members", "short strings"}
    assert parsed - len(body) < 8 * len(body) + (1 << 20), (shape, parsed / len(body))
    assert len(read.payload["input"]) > 100_000


async def test_token_id_arrays_and_long_text_pass() -> None:
    tokens = orjson.dumps({"model": "m", "input": [[9906 + i % 5000 for i in range(300_000)]]})
    text = orjson.dumps({"model": "m", "input": "def f(a, b): return {'x': [a, b]}\n" * 30_000})
    for body in (tokens, text):
        request, _ = _request(_pieces(body, 1 << 20), len(body))
        assert (await _read(request, 32 << 20)).size == len(body)
