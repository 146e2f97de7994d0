"""The request body read from the ASGI messages: pieces joined, the bound kept across them,
a client gone mid-upload told apart (pure logic: messages from a list, no server)."""

from __future__ import annotations

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.gateway.body import read_body
from services.gateway.errors import PayloadTooLarge


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
    payload, raw = await read_body(request, 1 << 20)
    assert raw == body
    assert payload["model"] == "m"
    assert len(taken) == len(_pieces(body, 700))


async def test_a_body_past_the_bound_over_several_messages_is_413_after_reading_on() -> None:
    body = b'{"input": "' + b"y" * 3000 + b'"}'
    request, taken = _request([*_pieces(body, 500), {"type": "http.disconnect"}])
    with pytest.raises(PayloadTooLarge):
        await read_body(request, 1000)
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
        await read_body(request, 1 << 20)


async def test_an_empty_body_is_not_json() -> None:
    request, _ = _request([{"type": "http.request", "body": b"", "more_body": False}])
    with pytest.raises(Exception, match="JSON") as caught:
        await read_body(request, 1 << 20)
    assert getattr(caught.value, "status_code", None) == 400
