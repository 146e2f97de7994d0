"""The benchmark's load generator: N clients over keep-alive connections (aiohttp, on uvloop).

One ``ClientSession`` with one connector (limit = N) per round; each client sends its next
request as soon as its last one ended. Streams are read to the end and must end with
``data: [DONE]``. Latency is kept per successful request; failures are counted by kind:
``http <status>``, the exception's class, or ``cut stream`` (ended without ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
import orjson

CHAT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED_MODEL = "Qwen/Qwen3-Embedding-0.6B"
MESSAGES = [{"role": "user", "content": "benchmark me"}]
BODIES: dict[str, bytes] = {
    "chat": orjson.dumps({"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 8}),
    "stream": orjson.dumps(
        {
            "model": CHAT_MODEL,
            "messages": MESSAGES,
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ),
    "embed": orjson.dumps({"model": EMBED_MODEL, "input": "benchmark me"}),
}
PATHS = {
    "chat": "/v1/chat/completions",
    "stream": "/v1/chat/completions",
    "embed": "/v1/embeddings",
}
MODES = tuple(BODIES)
_DONE = b"data: [DONE]"


@dataclass
class Round:
    """What one round measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


class Load:
    """N clients on one connector against one base URL (``http://host:port``)."""

    def __init__(self, base_url: str, mode: str, clients: int, headers: dict[str, str]) -> None:
        self.url = base_url + PATHS[mode]
        self.body = BODIES[mode]
        self.stream = mode == "stream"
        self.clients = clients
        self.headers = {**headers, "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        timeout = aiohttp.ClientTimeout(total=120)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def one(self, into: Round) -> None:
        """Send one request; record its latency or its failure."""
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.post(self.url, data=self.body, headers=self.headers) as answer:
                body = await answer.read()
                if answer.status != 200:
                    into.errors[f"http {answer.status}"] += 1
                    return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind = "cut stream" if isinstance(exc, aiohttp.ClientPayloadError) else ""
            into.errors[kind or type(exc).__name__] += 1
            return
        if self.stream and not body.rstrip().endswith(_DONE):
            into.errors["cut stream"] += 1
            return
        into.latencies.append(time.perf_counter() - started)

    async def warm(self) -> Round:
        """One request per client at once, so that all N connections are open and kept."""
        warm = Round()
        await asyncio.gather(*(self.one(warm) for _ in range(self.clients)))
        return warm

    async def run(self, requests: int | None = None, duration: float | None = None) -> Round:
        """A fixed number of requests, or as many as fit in a fixed duration (seconds)."""
        result = Round()
        remaining = requests if requests is not None else -1
        began = time.perf_counter()
        deadline = began + (duration if duration is not None else float("inf"))

        async def client() -> None:
            nonlocal remaining
            while remaining != 0 and time.perf_counter() < deadline:
                remaining -= 1 if remaining > 0 else 0
                await self.one(result)

        await asyncio.gather(*(client() for _ in range(self.clients)))
        result.elapsed = time.perf_counter() - began
        return result
