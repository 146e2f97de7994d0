"""A minimal upstream for the gateway benchmark: one plain ASGI callable, no framework.

Canned answers in OpenAI's shapes (with ``usage``), so its own cost per request is a small
fraction of the gateway's and the benchmark's ceiling is the gateway, not the upstream:

    POST /v1/chat/completions  JSON; SSE when "stream": true (usage chunk when
                               stream_options.include_usage), ending with ``data: [DONE]``
    POST /v1/embeddings        one vector of BENCH_EMBED_DIMS floats per input
    GET  /healthz              200
    /replica-<n>/...           the same (one server as several endpoints of a model's fleet)

    uvicorn bench.lib.raw_upstream:app --http httptools --loop uvloop --port 8090
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROMPT_TOKENS = 12
TOKENS = ("This", " is", " a", " canned", " answer", " from", " the", " bench")
EMBED_DIMS = int(os.environ.get("BENCH_EMBED_DIMS", "1024"))
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_VECTOR = [round(((i * 7919) % 2000) / 1000 - 1, 6) for i in range(EMBED_DIMS)]


def chat_answer(model: str) -> bytes:
    """A whole chat completion, ``usage`` last as real servers put it."""
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_767_225_600,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(TOKENS),
                "total_tokens": PROMPT_TOKENS + len(TOKENS),
            },
        }
    )


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chat_events(model: str, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed chat completion, one token per event."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_767_225_600}
    head["model"] = model
    events = [_event({**head, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    events += [
        _event({**head, "choices": [{"index": 0, "delta": {"content": token}}]}) for token in TOKENS
    ]
    events.append(_event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if include_usage:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(TOKENS),
            "total_tokens": PROMPT_TOKENS + len(TOKENS),
        }
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def embeddings_answer(model: str, inputs: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _VECTOR} for i in range(inputs)
            ],
            "model": model,
            "usage": {
                "prompt_tokens": PROMPT_TOKENS * inputs,
                "total_tokens": PROMPT_TOKENS * inputs,
            },
        }
    )


_cache: dict[tuple[str, str, int], Any] = {}


def _canned(kind: str, model: str, n: int) -> Any:
    """Answers are built once per (kind, model, n): the upstream spends almost nothing."""
    key = (kind, model, n)
    if key not in _cache:
        if kind == "chat":
            _cache[key] = chat_answer(model)
        elif kind == "stream":
            _cache[key] = chat_events(model, bool(n))
        else:
            _cache[key] = embeddings_answer(model, n)
    return _cache[key]


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path.startswith("/replica-"):  # one server standing for several endpoints of a fleet
        path = path[path.find("/", 1) :]
    if method == "GET" and path == "/healthz":
        await _answer(send, 200, b'{"status":"ok"}', _JSON)
        return
    if method != "POST" or path not in ("/v1/chat/completions", "/v1/embeddings"):
        await _answer(send, 404, b'{"error":{"message":"not found"}}', _JSON)
        return
    try:
        payload = orjson.loads(await _body(receive))
        model = str(payload.get("model", "bench"))
    except (orjson.JSONDecodeError, AttributeError):
        await _answer(send, 400, b'{"error":{"message":"bad json"}}', _JSON)
        return
    if path == "/v1/embeddings":
        given = payload.get("input")
        inputs = len(given) if isinstance(given, list) and given else 1
        await _answer(send, 200, _canned("embed", model, inputs), _JSON)
        return
    await _chat(send, payload, model)


async def _chat(send: Send, payload: dict[str, Any], model: str) -> None:
    if payload.get("stream") is not True:
        await _answer(send, 200, _canned("chat", model, 0), _JSON)
        return
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
    for event in _canned("stream", model, int(include_usage)):
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
