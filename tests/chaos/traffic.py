"""Steady client traffic through the gateways, and a tally of exactly what clients were told.

What counts as "told" for each answer (the gateway meters every request that passed
authentication, README "Usage events and the spool"):

- 200 with ``usage``: one request with those tokens;
- 401 or 503 (the key could not be checked): refused before authentication, not metered;
- any other error status (404 unknown model, 502, 504, ...): one request with no tokens
  and one error, as the Usage API's ``num_errors`` shows it;
- no answer at all, a stream cut before its usage chunk, a 200 without ``usage``: the client
  cannot know what was counted. The tally keeps these apart and the test requires none.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from shared.catalogue import Catalogue
from tests.e2e.system import CHAT, EMBED

UNKNOWN_MODEL = "chaos/no-such-model"
# One round of each client: the three metered kinds, and a 404 now and then.
ROUND = ("chat", "stream", "embeddings", "chat", "stream", "embeddings", "unknown")
UNMETERED = frozenset({401, 503})


@dataclass(frozen=True)
class Key:
    """One API key of the test, and its project."""

    project_id: str
    key_id: str
    secret: str


@dataclass
class Told:
    """What the clients of one key were told, summed as the Usage API sums it."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0


@dataclass
class Tally:
    """Every answer, classified; ``by_key_model`` holds tokens for pricing."""

    by_key: dict[str, Told] = field(default_factory=dict)
    by_key_model: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    unmetered: Counter[int] = field(default_factory=Counter)
    unknown: list[str] = field(default_factory=list)
    answers: int = 0

    def served(self, key_id: str, model: str, tokens: tuple[int, int, int]) -> None:
        """A 200 that carried usage: (input, cached input, output) tokens."""
        told = self.by_key.setdefault(key_id, Told())
        told.requests += 1
        told.input_tokens += tokens[0]
        told.cached_input_tokens += tokens[1]
        told.output_tokens += tokens[2]
        per_model = self.by_key_model.setdefault((key_id, model), [0, 0, 0])
        for i, n in enumerate(tokens):
            per_model[i] += n
        self.answers += 1

    def failed(self, key_id: str, status: int) -> None:
        """An error answer: metered with no tokens unless it came before authentication."""
        if status in UNMETERED:
            self.unmetered[status] += 1
        else:
            told = self.by_key.setdefault(key_id, Told())
            told.requests += 1
            told.errors += 1
        self.answers += 1

    def expected_usage(self) -> dict[str, Told]:
        return {k: Told(**vars(v)) for k, v in self.by_key.items()}

    def expected_costs(self, catalogue: Catalogue) -> dict[str, Decimal]:
        """Tokens times the price book, per key (the price in force now)."""
        now = datetime.now(UTC)
        out: dict[str, Decimal] = {}
        for (key_id, model), (input_tokens, cached, output) in self.by_key_model.items():
            entry = catalogue.get(model)
            assert entry is not None, model
            price = entry.price_at(now)
            assert price is not None, model
            cached_price = price.cached_input_per_million
            if cached_price is None:
                cached_price = price.input_per_million
            amount = (
                (input_tokens - cached) * price.input_per_million
                + cached * cached_price
                + output * price.output_per_million
            ) / Decimal(1_000_000)
            out[key_id] = out.get(key_id, Decimal(0)) + amount
        return {k: v for k, v in out.items() if v}


def _chat_tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    details = usage.get("prompt_tokens_details") or {}
    return (
        int(usage["prompt_tokens"]),
        int(details.get("cached_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


async def _stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """POST a streamed chat; return the response with its SSE text read into ``.extensions``."""
    async with client.stream("POST", url, json=body, headers=headers) as answer:
        text = (await answer.aread()).decode()
    answer.extensions["sse"] = text
    return answer


def _stream_usage(text: str) -> dict[str, Any] | None:
    """The usage of a complete stream (its last data chunk before [DONE]), else None."""
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    if not data or data[-1] != "[DONE]":
        return None
    for chunk in reversed(data[:-1]):
        usage = json.loads(chunk).get("usage")
        if usage:
            return dict(usage)
    return None


async def one_request(
    client: httpx.AsyncClient, gateway: str, key: Key, *, kind: str, n: int, tally: Tally
) -> None:
    """Send one request of the given kind and tally what its answer told the client."""
    headers = {"authorization": f"Bearer {key.secret}"}
    what = f"{kind} #{n} via {gateway} for {key.key_id}"
    chat = {"model": CHAT, "messages": [{"role": "user", "content": f"chaos question {n}"}]}
    try:
        if kind == "stream":
            body = {**chat, "stream": True, "stream_options": {"include_usage": True}}
            answer = await _stream(client, f"{gateway}/v1/chat/completions", body, headers)
        elif kind == "embeddings":
            docs = [f"document {n}.{i} about tolls" for i in range(4)]
            answer = await client.post(
                f"{gateway}/v1/embeddings", json={"model": EMBED, "input": docs}, headers=headers
            )
        elif kind == "unknown":
            answer = await client.post(
                f"{gateway}/v1/chat/completions",
                json={**chat, "model": UNKNOWN_MODEL},
                headers=headers,
            )
        else:
            answer = await client.post(f"{gateway}/v1/chat/completions", json=chat, headers=headers)
    except httpx.HTTPError as exc:
        tally.unknown.append(f"{what}: no answer ({type(exc).__name__}: {exc})")
        return
    if answer.status_code != 200:
        tally.failed(key.key_id, answer.status_code)
        return
    try:
        if kind == "stream":
            usage = _stream_usage(answer.extensions["sse"])
        else:
            usage = answer.json().get("usage")
    except ValueError:
        tally.unknown.append(f"{what}: 200 with a body that is not JSON")
        return
    if not usage:
        tally.unknown.append(f"{what}: 200 without usage")
        return
    model = EMBED if kind == "embeddings" else CHAT
    tokens = (int(usage["prompt_tokens"]), 0, 0) if model == EMBED else _chat_tokens(usage)
    tally.served(key.key_id, model, tokens)


async def client_loop(
    number: int,
    gateways: list[str],
    keys: list[Key],
    *,
    rate: float,
    stop: asyncio.Event,
    tally: Tally,
) -> None:
    """One client: a key of its own, requests spread over every gateway, ``rate`` a second,
    each request sent once (no retries), until stop is set."""
    key = keys[number % len(keys)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        next_at = time.monotonic()
        n = 0
        while not stop.is_set():
            gateway = gateways[(number + n) % len(gateways)]
            await one_request(client, gateway, key, kind=ROUND[n % len(ROUND)], n=n, tally=tally)
            n += 1
            next_at += 1 / rate
            # Pacing, not waiting for an outcome: the load stays steady whatever happens.
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
