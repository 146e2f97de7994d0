"""A small deterministic OpenAI-compatible server for the demo models: no weights, honest usage.

It stands in for vLLM (or any OpenAI-compatible server) in ``make up`` and the tests. Text is
generated from a hash of the prompt, vectors from a hash of each input; token counts come from
one tokenizer (a run of word characters, or one punctuation mark, is a token) used for prompts
and outputs alike, so ``usage`` is exact for what was sent and produced.

It serves as one member of a model's fleet too, and shows its load as vLLM does:

- a delay on every inference request (``delay_ms``, or ``TOLLGATE_UPSTREAM_DELAY_MS``; a stream
  waits before its first chunk), changed at run time with ``POST /demo/delay``
  ``{"delay_ms": N}`` (0 to 600000) so a test can make one replica slow;
- vLLM's queue: with ``max_running`` (``TOLLGATE_UPSTREAM_MAX_RUNNING``; 0, the default, is no
  limit) at most that many requests run at once, a stream until its last chunk, and the others
  wait their turn in arrival order;
- ``GET /metrics`` in vLLM's Prometheus names (``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``, ``vllm:gpu_cache_usage_perc``, ``vllm:kv_cache_usage_perc``),
  one series per model with ``model_name``. One queue serves both models, as one vLLM engine's
  serves its model, so each series shows the server's numbers: the load a request for that
  model would wait behind. The KV cache is modelled as running / max_running (/ 64 unlimited);
- ``GET /health`` (vLLM's: 200, empty body) beside ``GET /healthz``.

Test knobs ride on the upstream model name after ``#`` (the catalogue's ``upstream.model``),
e.g. ``Qwen/Qwen2.5-0.5B-Instruct#status=500``, ``#delay_ms=3000``, ``#chunk_delay_ms=50``,
``#no_usage``; several join with ``&``. ``GET /demo/stats`` counts the requests served and
says how many run and wait, and the delay.

``python -m deploy.demo_upstream --port P [--host H] [--delay-ms D] [--max-running N]`` serves
one (``make up`` runs ``uvicorn deploy.demo_upstream:create_app --factory`` instead).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.types import Receive, Scope, Send

CHAT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B"
MODELS = (CHAT_MODEL, EMBEDDING_MODEL)
DEFAULT_MAX_TOKENS = 16
MAX_DELAY_MS = 600_000
# The KV cache a server without a max_running is modelled as: full at this many requests.
UNLIMITED_CACHE_REQUESTS = 64
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM's gauges (names, help texts) that a fleet's balancer reads.
GAUGES = (
    ("vllm:num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage."),
    ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
)
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


class Queue:
    """vLLM's scheduler in miniature: at most max_running requests run at once (0: no limit),
    the others wait in arrival order; both counted at every moment."""

    def __init__(self, max_running: int) -> None:
        self.max_running = max_running
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_running) if max_running > 0 else None

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot; the function returned gives it back (once, however often called)."""
        self.waiting += 1
        try:
            if self._slots is not None:
                await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                self.running -= 1
                if self._slots is not None:
                    self._slots.release()

        return leave

    @property
    def cache_usage(self) -> float:
        """The KV cache's share in use: running over what fits, at most 1."""
        room = self.max_running or UNLIMITED_CACHE_REQUESTS
        return min(1.0, self.running / room)


class HeldStream(StreamingResponse):
    """A stream that keeps its request's slot until it ends, however it ends (a client gone
    before the first chunk included)."""

    def __init__(self, stream: StreamingResponse, leave: Callable[[], None]) -> None:
        super().__init__(stream.body_iterator, media_type=stream.media_type)
        self.leave = leave

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.leave()


class DelayBody(BaseModel):
    """The body of ``POST /demo/delay``."""

    model_config = ConfigDict(extra="forbid")

    delay_ms: Annotated[StrictInt, Field(ge=0, le=MAX_DELAY_MS)]


class DemoUpstream:
    """The handlers, with a request counter the tests read, the delay and the queue."""

    def __init__(self, embedding_dimensions: int, delay_ms: int = 0, max_running: int = 0) -> None:
        self.requests = 0
        self.embedding_dimensions = embedding_dimensions
        self.delay_ms = delay_ms
        self.queue = Queue(max_running)

    def metrics(self) -> str:
        """The gauges in Prometheus' text format, one series per model, as vLLM writes them."""
        values = (
            float(self.queue.running),
            float(self.queue.waiting),
            self.queue.cache_usage,
            self.queue.cache_usage,
        )
        lines = []
        for (name, text), value in zip(GAUGES, values, strict=True):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
            lines += [f'{name}{{model_name="{model}"}} {value!r}' for model in MODELS]
        return "\n".join(lines) + "\n"

    def stats(self) -> dict[str, int]:
        """What ``GET /demo/stats`` answers."""
        queue = self.queue
        return {
            "requests": self.requests,
            "running": queue.running,
            "waiting": queue.waiting,
            "delay_ms": self.delay_ms,
        }

    async def serve(self, knobs: Knobs, answer: Callable[[], Awaitable[Response]]) -> Response:
        """Queue the request, wait the server's delay and the knob's, then answer; the slot
        is held until the answer is built, or for a stream until it ends."""
        leave = await self.queue.enter()
        try:
            delay_ms = self.delay_ms + knobs.delay_ms
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            if knobs.status:
                response: Response = _error(
                    knobs.status, f"demo upstream forced status {knobs.status}"
                )
            elif knobs.model not in MODELS:
                message = f"The model '{knobs.model}' does not exist."
                response = _error(404, message, "model_not_found")
            else:
                response = await answer()
        except BaseException:
            leave()
            raise
        if isinstance(response, StreamingResponse):
            return HeldStream(response, leave)
        leave()
        return response

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


def _setting(given: int | None, variable: str, ceiling: int) -> int:
    """given, else the environment's variable (default 0); 0 to ceiling, else ValueError."""
    name = variable if given is None else variable.removeprefix("TOLLGATE_UPSTREAM_").lower()
    raw = str(given) if given is not None else os.environ.get(variable, "0").strip() or "0"
    if not raw.isdigit() or int(raw) > ceiling:
        raise ValueError(f"{name} must be an integer from 0 to {ceiling}, not {raw!r}")
    return int(raw)


def create_app(
    embedding_dimensions: int | None = None,
    delay_ms: int | None = None,
    max_running: int | None = None,
) -> FastAPI:
    """The demo upstream app (``uvicorn deploy.demo_upstream:create_app --factory``); what is
    not given comes from ``TOLLGATE_UPSTREAM_EMBEDDING_DIMENSIONS``, ``_DELAY_MS`` and
    ``_MAX_RUNNING``."""
    dims = embedding_dimensions or int(
        os.environ.get("TOLLGATE_UPSTREAM_EMBEDDING_DIMENSIONS", "64")
    )
    demo = DemoUpstream(
        dims,
        delay_ms=_setting(delay_ms, "TOLLGATE_UPSTREAM_DELAY_MS", MAX_DELAY_MS),
        max_running=_setting(max_running, "TOLLGATE_UPSTREAM_MAX_RUNNING", 1_000_000),
    )
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
        return body, Knobs.parse(body.get("model"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        got = await parsed(request)
        if isinstance(got, Response):
            return got
        return await demo.serve(got[1], lambda: demo.chat(*got, completion=False))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        got = await parsed(request)
        if isinstance(got, Response):
            return got
        return await demo.serve(got[1], lambda: demo.chat(*got, completion=True))

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        got = await parsed(request)
        if isinstance(got, Response):
            return got
        return await demo.serve(got[1], lambda: demo.responses(*got))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        got = await parsed(request)
        if isinstance(got, Response):
            return got
        return await demo.serve(got[1], lambda: demo.embeddings(*got))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in MODELS]
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def metrics() -> Response:
        """vLLM's load gauges, in Prometheus' text format."""
        return Response(demo.metrics(), media_type=METRICS_CONTENT_TYPE)

    @app.post("/demo/delay")
    async def set_delay(body: DelayBody) -> dict[str, int]:
        """Change the delay every request waits from now on."""
        demo.delay_ms = body.delay_ms
        return {"delay_ms": demo.delay_ms}

    @app.get("/demo/stats")
    async def stats() -> dict[str, int]:
        return demo.stats()

    @app.get("/health")
    async def health() -> Response:
        """vLLM's health path: 200 with an empty body."""
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m deploy.demo_upstream --port P``: one demo upstream, served until killed."""
    parser = argparse.ArgumentParser(prog="python -m deploy.demo_upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--delay-ms", type=int, default=None, help="default: the environment's")
    parser.add_argument("--max-running", type=int, default=None, help="0: no limit")
    args = parser.parse_args(argv)
    try:
        app = create_app(delay_ms=args.delay_ms, max_running=args.max_running)
    except ValueError as exc:
        parser.error(str(exc))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
