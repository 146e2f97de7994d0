"""A small deterministic OpenAI-compatible server for the demo models: no weights, honest usage.

It stands in for vLLM (or any OpenAI-compatible server) in ``make up`` and the tests. Text is
generated from a hash of the prompt, vectors from a hash of each input; token counts come from
one tokenizer (a run of word characters, or one punctuation mark, is a token) used for prompts
and outputs alike, so ``usage`` is exact for what was sent and produced.

Test knobs ride on the upstream model name after ``#`` (the catalogue's ``upstream.model``),
e.g. ``Qwen/Qwen2.5-0.5B-Instruct#status=500``, ``#delay_ms=3000``, ``#chunk_delay_ms=50``,
``#no_usage``; several join with ``&``. ``GET /demo/stats`` counts the requests served.
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

CHAT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B"
MODELS = (CHAT_MODEL, EMBEDDING_MODEL)
DEFAULT_MAX_TOKENS = 16
_TOKEN = re.compile(r"\w+|[^\w\s]")
_VOCABULARY = re.findall(
    r"\w+",
    "the gateway checks every key before a request reaches the model and meters tokens "
    "for each project so that usage and costs are exact across streams batches and retries",
)


def count_tokens(text: str) -> int:
    """The demo tokenizer: each word run or punctuation mark is one token."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Knobs:
    """Test-only behaviour requested through the model name."""

    model: str
    status: int | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    no_usage: bool = False

    @classmethod
    def parse(cls, name: object) -> Knobs:
        raw = name if isinstance(name, str) else ""
        model, _, options = raw.partition("#")
        found: dict[str, Any] = {}
        for option in filter(None, options.split("&")):
            key, _, value = option.partition("=")
            if key == "no_usage":
                found["no_usage"] = True
            elif key in ("status", "delay_ms", "chunk_delay_ms"):
                found[key] = int(value)
        return cls(model=model, **found)


def _text_of(content: object) -> str:
    """Text of a message content: a string or a list of text/input_text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _messages_text(messages: object) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    return "\n".join(
        f"{m.get('role', '')}: {_text_of(m.get('content'))}"
        for m in messages
        if isinstance(m, dict)
    )


def _words(prompt: str, n: int) -> list[str]:
    """n words picked deterministically from the prompt's hash (each is exactly one token)."""
    seed = hashlib.sha256(prompt.encode()).digest()
    return [_VOCABULARY[seed[i % len(seed)] % len(_VOCABULARY)] for i in range(n)]


def _max_tokens(body: dict[str, Any], *names: str) -> int:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return min(value, 4096)
    return DEFAULT_MAX_TOKENS


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": error_type, "code": code, "param": None}}
    return JSONResponse(body, status_code=status)


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {payload}\n\n".encode()


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for text."""
    raw = hashlib.shake_256(text.encode()).digest(dimensions * 2)
    values = [
        int.from_bytes(raw[i : i + 2], "little") / 32767.5 - 1.0 for i in range(0, len(raw), 2)
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


class DemoUpstream:
    """The handlers, with a request counter the tests read."""

    def __init__(self, embedding_dimensions: int) -> None:
        self.requests = 0
        self.embedding_dimensions = embedding_dimensions

    async def chat(self, body: dict[str, Any], knobs: Knobs, completion: bool) -> Response:
        prompt = str(body.get("prompt", "")) if completion else _messages_text(body.get("messages"))
        limit = _max_tokens(body, "max_completion_tokens", "max_tokens")
        words = _words(prompt, limit)
        usage = {
            "prompt_tokens": count_tokens(prompt),
            "completion_tokens": len(words),
            "total_tokens": count_tokens(prompt) + len(words),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        ident = "cmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:24]
        common = {"id": ident, "created": int(time.time()), "model": knobs.model}
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include = bool(options.get("include_usage")) and not knobs.no_usage
            chunks = self._chat_chunks(common, words, completion, usage if include else None)
            return StreamingResponse(self._paced(chunks, knobs), media_type="text/event-stream")
        text = " ".join(words)
        result: dict[str, Any]
        if completion:
            choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
            result = {**common, "object": "text_completion", "choices": [choice]}
        else:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "length", "logprobs": None}
            result = {**common, "object": "chat.completion", "choices": [choice]}
        if not knobs.no_usage:
            result["usage"] = usage
        return JSONResponse(result)

    def _chat_chunks(
        self,
        common: dict[str, Any],
        words: list[str],
        completion: bool,
        usage: dict[str, Any] | None,
    ) -> Iterator[bytes]:
        obj = "text_completion" if completion else "chat.completion.chunk"
        if not completion:
            delta = {"role": "assistant", "content": ""}
            yield _sse({**common, "object": obj, "choices": [{"index": 0, "delta": delta}]})
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            done = "length" if i == len(words) - 1 else None
            choice: dict[str, Any] = {"index": 0, "finish_reason": done}
            choice.update({"text": piece} if completion else {"delta": {"content": piece}})
            yield _sse({**common, "object": obj, "choices": [choice]})
        if usage is not None:
            yield _sse({**common, "object": obj, "choices": [], "usage": usage})
        yield _sse("[DONE]")

    async def responses(self, body: dict[str, Any], knobs: Knobs) -> Response:
        given = body.get("input")
        prompt = _messages_text(given)
        if isinstance(body.get("instructions"), str):
            prompt = body["instructions"] + "\n" + prompt
        words = _words(prompt, _max_tokens(body, "max_output_tokens"))
        text = " ".join(words)
        ident = "resp_" + hashlib.sha256(prompt.encode()).hexdigest()[:24]
        usage = {
            "input_tokens": count_tokens(prompt),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": count_tokens(prompt) + len(words),
        }
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {
            "type": "message",
            "id": "msg_" + ident[5:],
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        response: dict[str, Any] = {
            "id": ident,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": knobs.model,
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None if knobs.no_usage else usage,
        }
        if not body.get("stream"):
            return JSONResponse(response)
        events = self._response_events(response, item, part, words)
        return StreamingResponse(self._paced(events, knobs), media_type="text/event-stream")

    def _response_events(
        self,
        response: dict[str, Any],
        item: dict[str, Any],
        part: dict[str, Any],
        words: list[str],
    ) -> Iterator[bytes]:
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            return _sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=started)
        empty_item = {**item, "status": "in_progress", "content": []}
        yield event("response.output_item.added", output_index=0, item=empty_item)
        empty_part = {**part, "text": ""}
        ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        yield event("response.content_part.added", **ids, part=empty_part)
        for i, word in enumerate(words):
            yield event("response.output_text.delta", **ids, delta=word if i == 0 else " " + word)
        yield event("response.output_text.done", **ids, text=part["text"])
        yield event("response.content_part.done", **ids, part=part)
        yield event("response.output_item.done", output_index=0, item=item)
        yield event("response.completed", response=response)

    async def embeddings(self, body: dict[str, Any], knobs: Knobs) -> Response:
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'input' must be a string or a non-empty list of strings.")
        dims = body.get("dimensions") or self.embedding_dimensions
        if not isinstance(dims, int) or not 1 <= dims <= 4096:
            return _error(400, "'dimensions' must be an integer between 1 and 4096.")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_tokens(text)
            vector = embed(text, dims)
            value: object = (
                base64.b64encode(array.array("f", vector).tobytes()).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": value})
        result: dict[str, Any] = {"object": "list", "data": data, "model": knobs.model}
        if not knobs.no_usage:
            result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Response(json.dumps(result, separators=(",", ":")), media_type="application/json")

    async def _paced(self, chunks: Iterator[bytes], knobs: Knobs) -> AsyncIterator[bytes]:
        for chunk in chunks:
            if knobs.chunk_delay_ms:
                await asyncio.sleep(knobs.chunk_delay_ms / 1000)
            yield chunk


def create_app(embedding_dimensions: int | None = None) -> FastAPI:
    """The demo upstream app (``uvicorn deploy.demo_upstream:create_app --factory``)."""
    dims = embedding_dimensions or int(
        os.environ.get("TOLLGATE_UPSTREAM_EMBEDDING_DIMENSIONS", "64")
    )
    demo = DemoUpstream(dims)
    app = FastAPI(title="Tollgate demo upstream")
    app.state.demo = demo

    async def parsed(request: Request) -> tuple[dict[str, Any], Knobs] | Response:
        demo.requests += 1
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.")
        knobs = Knobs.parse(body.get("model"))
        if knobs.delay_ms:
            await asyncio.sleep(knobs.delay_ms / 1000)
        if knobs.status:
            return _error(knobs.status, f"demo upstream forced status {knobs.status}")
        if knobs.model not in MODELS:
            return _error(404, f"The model '{knobs.model}' does not exist.", "model_not_found")
        return body, knobs

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        got = await parsed(request)
        return got if isinstance(got, Response) else await demo.chat(*got, completion=False)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        got = await parsed(request)
        return got if isinstance(got, Response) else await demo.chat(*got, completion=True)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        got = await parsed(request)
        return got if isinstance(got, Response) else await demo.responses(*got)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        got = await parsed(request)
        return got if isinstance(got, Response) else await demo.embeddings(*got)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in MODELS]
        return {"object": "list", "data": data}

    @app.get("/demo/stats")
    async def stats() -> dict[str, int]:
        return {"requests": demo.requests}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
