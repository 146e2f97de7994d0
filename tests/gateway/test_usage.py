"""Usage extraction per API, the stream meter and the relay's splitting (pure logic, no servers)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import cast

import pytest

from services.gateway.upstream.pool import UpstreamResponse
from services.gateway.usage.meter import StreamMeter, Usage, estimate, find_usage, from_upstream
from services.gateway.usage.relay import relay_events

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_each_api_names_its_usage_fields_its_own_way() -> None:
    chat = {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert from_upstream("/v1/chat/completions", chat) == Usage(10, 3, 4)
    assert from_upstream("/v1/completions", {"prompt_tokens": 2, "completion_tokens": 1}) == Usage(
        2, 1
    )
    assert from_upstream("/v1/embeddings", {"prompt_tokens": 7, "total_tokens": 7}) == Usage(7, 0)
    responses = {
        "input_tokens": 5,
        "output_tokens": 9,
        "input_tokens_details": {"cached_tokens": 1},
    }
    assert from_upstream("/v1/responses", responses) == Usage(5, 9, 1)
    assert from_upstream("/v1/chat/completions", None) is None


def test_usage_is_found_from_the_end_of_a_large_body() -> None:
    body = {
        "data": [{"embedding": [0.1] * 8, "note": 'text with "usage" inside'}] * 1000,
        "usage": {"prompt_tokens": 42, "total_tokens": 42},
    }
    assert find_usage(json.dumps(body).encode()) == {"prompt_tokens": 42, "total_tokens": 42}
    assert find_usage(b'{"data": []}') is None
    assert find_usage(b'{"usage": null}') is None


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_stream_meter_drops_the_usage_chunk_only_when_not_asked() -> None:
    usage_chunk = _event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    content = _event({"choices": [{"index": 0, "delta": {"content": "hi there"}}]})
    for asked in (True, False):
        meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=asked)
        assert meter.feed(content)
        assert meter.feed(usage_chunk) is asked
        assert meter.feed(b"data: [DONE]\n\n")
        assert meter.result({}) == Usage(3, 2)


def test_stream_meter_estimates_what_was_produced_when_cut_short() -> None:
    meter = StreamMeter("/v1/responses", forward_usage_chunk=True)
    meter.feed(
        b"event: response.output_text.delta\n"
        + _event({"type": "response.output_text.delta", "delta": "one two"})
    )
    payload = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a b c"}]}]}
    assert meter.result(payload) == Usage(3, 2, 0, "estimated")
    assert estimate("/v1/embeddings", {"input": ["x y", "z"]}, "") == Usage(3, 0, 0, "estimated")


def test_stream_meter_reads_an_event_however_its_lines_are_laid_out() -> None:
    # One "data: ..." line is read without splitting the event into lines (the common case);
    # no space after the colon, other fields first, or the data split over lines read alike.
    content = json.dumps({"choices": [{"index": 0, "delta": {"content": "four five six"}}]})
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    layouts = {
        "one line": "data: {}\n\n",
        "no space": "data:{}\n\n",
        "spaces around": "data:   {}  \n\n",
        "after an id": "id: 7\ndata: {}\n\n",
    }
    for name, layout in layouts.items():
        meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=False)
        assert meter.feed(layout.format(content).encode()), name
        assert not meter.feed(layout.format(usage).encode()), name  # the usage chunk, held back
        assert meter.output_text == ["four five six"], name
        assert meter.result({}) == Usage(9, 3), name
    split = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    assert split.feed(f"data: {content[:10]}\ndata: {content[10:]}\n\n".encode())
    assert split.output_text == ["four five six"]
    cut = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    assert cut.feed(f"data: {content}\n".encode())  # the stream's last bytes, no blank line
    assert cut.result({}) == Usage(0, 3, 0, "estimated")


def _chunk(content: str | None = None, usage: object = "absent") -> bytes:
    payload: dict[str, object] = {"object": "chat.completion.chunk", "choices": []}
    if content is not None:
        payload["choices"] = [{"index": 0, "delta": {"content": content}}]
    if usage != "absent":
        payload["usage"] = usage
    return _event(payload)


def test_chunks_without_usage_are_read_only_when_their_text_is_needed() -> None:
    # OpenAI's own chunks say "usage": null until the last; the word inside a text is no key.
    pieces = ["a usage", ' "usage": 5 ', "three", " four"]
    figures = {"prompt_tokens": 2, "completion_tokens": 4}
    for nulls in (False, True):
        stream = [_chunk(p, None) if nulls else _chunk(p) for p in pieces]
        full = StreamMeter("/v1/chat/completions", forward_usage_chunk=False)
        assert all(full.feed(event) for event in stream)
        assert not full.feed(_chunk(usage=figures))
        assert full.result({}) == Usage(2, 4)
        cut = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
        assert all(cut.feed(event) for event in stream)  # the usage never comes
        assert cut.output_text == pieces  # every piece, in order
        expected = estimate("/v1/chat/completions", {}, "".join(pieces))
        assert cut.result({}) == expected


def test_the_text_stays_in_order_when_usage_comes_with_the_last_piece() -> None:
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    meter.feed(_chunk("one"))
    meter.feed(_chunk("two", None))
    meter.feed(_chunk("three", {"prompt_tokens": 1, "completion_tokens": 3}))
    meter.feed(_chunk("four"))
    assert meter.output_text == ["one", "two", "three", "four"]
    assert meter.result({}) == Usage(1, 3)


def test_chunks_kept_unread_are_bounded_in_size() -> None:
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    pieces = [f"token{i} " for i in range(5000)]  # ~80 bytes a chunk: several times the bound
    for piece in pieces:
        assert meter.feed(_chunk(piece))
        assert meter._unread_size <= StreamMeter._UNREAD_MAX + 200
    assert "".join(meter.output_text) == "".join(pieces)


def _relayed(stream: bytes, cuts: list[int], asked: bool) -> tuple[bytes, StreamMeter]:
    """What relay_events passes on of a stream that arrives in pieces cut at ``cuts``."""
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=asked)
    bounds = [0, *sorted(cuts), len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    class Upstream:
        async def iter_chunks(self) -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

    async def relay() -> bytes:
        upstream = cast(UpstreamResponse, Upstream())
        return b"".join([c async for c in relay_events(upstream, meter, {}, "m")])

    return asyncio.run(relay()), meter


def _one_by_one(stream: bytes, asked: bool) -> tuple[bytes, StreamMeter]:
    """The same stream fed to the meter event by event (what feed_events must match)."""
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=asked)
    events = [e + b"\n\n" for e in stream.split(b"\n\n")[:-1]]
    return b"".join(e for e in events if meter.feed(e)), meter


def test_events_that_arrive_together_are_metered_as_one_by_one() -> None:
    figures = {"prompt_tokens": 4, "completion_tokens": 3}
    words = ["usage", "is", ' "usage": 1 ']  # the word as a whole text, and inside one
    streams = {
        "usage last": [_chunk(w) for w in words] + [_chunk(usage=figures)],
        "usage null until the last": [_chunk(w, None) for w in words] + [_chunk(usage=figures)],
        "usage with the last text": [_chunk("a"), _chunk("b", figures), _chunk("c")],
        "usage first": [_chunk(usage=figures), _chunk("x")],
        "never any usage": [_chunk(w) for w in words],
        "other fields and blank lines": [
            b": ping\n\n",
            b"id: 1\n" + _chunk("one"),
            b"\n\n",
            b"event: message\ndata: " + json.dumps({"choices": []}).encode() + b"\n\n",
            _chunk("two", None),
            _chunk(usage=figures),
        ],
    }
    rng = random.Random(7)
    for name, events in streams.items():
        stream = b"".join(events) + b"data: [DONE]\n\n"
        for asked in (True, False):
            expected, alone = _one_by_one(stream, asked)
            for trial in range(30):
                cuts = [] if trial == 0 else rng.sample(range(1, len(stream)), rng.randint(1, 6))
                out, meter = _relayed(stream, cuts, asked)
                assert out == expected, (name, asked, cuts)
                assert meter.result({}) == alone.result({}), (name, asked, cuts)
                assert meter.output_text == alone.output_text, (name, asked, cuts)
    dropped, _ = _relayed(b"".join(streams["usage last"]), [], asked=False)
    assert b"completion_tokens" not in dropped  # the usage chunk the client did not ask for
    assert dropped.count(b"data:") == len(words)


def test_events_without_usage_are_kept_in_one_piece() -> None:
    meter = StreamMeter("/v1/chat/completions", forward_usage_chunk=True)
    block = b"".join(_chunk(f"t{i}") for i in range(20))
    assert meter.feed_events(block) is block  # passed on as it came, nothing rebuilt
    assert len(meter._unread) == 1
    assert meter.output_text == [f"t{i}" for i in range(20)]
