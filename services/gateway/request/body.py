"""The request body: read once within its bound, parsed strictly and within a memory bound.

orjson is stricter than the standard library where a lenient parser lets through what a
later step cannot handle: it refuses invalid UTF-8, lone surrogates (``"\\ud800"``), NaN and
Infinity, and nesting deeper than 1,024 levels. Each is a 400 in OpenAI's shape, never a 500,
and the connection stays usable (the whole body has been read).

Memory. A parsed value costs up to about 100 bytes (an empty object 72, a member of an object
97) however few bytes it took in the body (``{}`` is two): 32 MiB of ``[{},{},...]`` would take
a gigabyte. So before parsing, a body's structure is counted (its ``{ [ : , "`` at C speed)
and priced at what each can cost parsed (``_PARSED_COST``): a body whose parse could take
more than ``memory_ratio`` times its own size (plus 1 MiB), or that holds more than
``max_values`` values in all, is refused with 400 before it is parsed. The first count takes
in what is inside strings too (code or JSON pasted in a prompt is full of brackets); a body it
finds too costly is counted again with its strings emptied (a regular expression whose time
grows with the number of strings, so only when they are at most ``_RECOUNT_QUOTES_MAX / 2``).
Token-id arrays (``[9906, 11, ...]``, about 6 times their size), text and code pass; a body
of tiny objects, arrays or strings does not. And bodies above ``large_bytes`` share
a budget of bytes in flight (``BodyBudget``): a burst of large bodies waits its turn, or
gets 503, instead of growing the process past its memory limit.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from services.gateway.errors import (
    InvalidJson,
    LargeBodiesBusy,
    NestedTooDeeply,
    PayloadTooLarge,
    TooManyJsonValues,
)
from shared.errors import BadRequest

_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a decimal", list: "an array"}
# The most one structural byte can cost parsed: an object (with its first member), an array,
# an object member (key and slot), another item (an int or float and its slot).
# A string (two quotes) at least its object's 50 bytes beyond its text.
_PARSED_COST = ((b"{", 100), (b"[", 64), (b":", 64), (b",", 36), (b'"', 25))
_PARSED_FLOOR = 1024 * 1024  # bodies up to ~11 KB cannot pass it: most are never counted
_NOT_COUNTED = bytes(c for c in range(256) if c not in b'{[:,"')
_RECOUNT_QUOTES_MAX = 200_000
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class BodyBudget:
    """Bytes of large bodies in flight, at most ``limit``: first come, first served; a body
    larger than the whole budget goes alone. A wait past ``wait_s`` is a 503."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, amount: int) -> bool:
        return self.used == 0 or self.used + amount <= self.limit

    async def take(self, amount: int) -> None:
        if not self._waiting and self._fits(amount):
            self.used += amount
            return
        entry = (amount, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), self.wait_s)
        except TimeoutError:
            self._abandon(entry)
            raise LargeBodiesBusy() from None
        except BaseException:
            self._abandon(entry)
            raise

    def _abandon(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        amount, waiter = entry
        if waiter.done():
            self.give(amount)  # granted just as the wait ended: handed on
            return
        waiter.cancel()
        self._waiting.remove(entry)
        self._wake()  # the one behind may fit where this one did not

    def give(self, amount: int) -> None:
        self.used -= amount
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            amount, waiter = self._waiting.popleft()
            self.used += amount
            waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int  # larger bodies get 413
    max_values: int  # JSON values one body may hold
    memory_ratio: int  # what parsing may cost, in multiples of the body's size
    large_bytes: int  # bodies above this take from the budget


@dataclass(slots=True)
class Body:
    payload: dict[str, Any]
    size: int
    held: int = 0  # bytes taken from the budget, for the caller to give back


async def read_body(request: Request, limits: BodyLimits, budget: BodyBudget) -> Body:
    """The parsed JSON object and its size; 413 past max_bytes, 400 if not JSON or too many
    values, 503 if a large body could not get its turn. What it took from the budget is in
    ``Body.held`` for the caller to give back (here on any error)."""
    body = Body({}, 0)
    try:
        raw = await _read(request, limits, budget, body)
        _check_structure(raw, limits)
        body.payload = _parse(raw)
        body.size = len(raw)
    except BaseException:
        if body.held:
            budget.give(body.held)
        raise
    return body


async def _read(
    request: Request, limits: BodyLimits, budget: BodyBudget, body: Body
) -> bytes | bytearray:
    max_bytes = limits.max_bytes
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > max_bytes
    if not too_big and declared.isdigit() and int(declared) > limits.large_bytes:
        await budget.take(int(declared))
        body.held = int(declared)
    raw = bytearray()
    size = 0
    receive = request.receive  # the ASGI messages themselves: Request.stream() costs more
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            too_big = True
        if too_big:
            # Keep reading (up to twice the limit) so the client gets to see the 413
            # instead of a connection reset in the middle of its upload.
            if size > 2 * max_bytes:
                break
            continue
        if not body.held and size > limits.large_bytes:
            # No length declared (chunked): counted as the largest it may be.
            await budget.take(max_bytes)
            body.held = max_bytes
        if not more and not raw:
            return chunk  # the whole body in one message (small ones): no copy
        raw += chunk
    if too_big:
        raise PayloadTooLarge(max_bytes)
    return raw


def _check_structure(raw: bytes | bytearray, limits: BodyLimits) -> None:
    """400 for a body whose parse could take more memory than its bounds allow."""
    allowed = limits.memory_ratio * len(raw) + _PARSED_FLOOR
    if len(raw) * _PARSED_COST[0][1] <= allowed and len(raw) <= limits.max_values:
        return  # too short to pass either bound (most bodies): nothing to count
    if _within(raw, allowed, limits.max_values):
        return
    strings = raw.count(b'"') - raw.count(b'\\"')  # escaped quotes are inside strings
    if strings <= _RECOUNT_QUOTES_MAX and _within(
        _STRING.sub(b'""', raw), allowed, limits.max_values
    ):
        return
    raise TooManyJsonValues(limits.max_values)


def _within(raw: bytes | bytearray, allowed: int, max_values: int) -> bool:
    # Only the priced bytes kept (one pass, faster than a count per byte value), then counted.
    priced = raw.translate(None, _NOT_COUNTED)
    if len(priced) * _PARSED_COST[0][1] <= allowed and len(priced) <= max_values:
        return True
    counts = [priced.count(char) for char, _ in _PARSED_COST]
    cost = sum(count * price for count, (_, price) in zip(counts, _PARSED_COST, strict=True))
    values = counts[0] + counts[1] + counts[3] + 1
    return cost <= allowed and values <= max_values


def _parse(raw: bytes | bytearray) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise NestedTooDeeply() from None
        raise InvalidJson() from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    return payload


def requested_model(payload: dict[str, Any]) -> str:
    """The body's ``model``: a non-empty string, else a 400 naming the parameter."""
    model = payload.get("model")
    if model is None or model == "":
        raise BadRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str):
        got = _JSON_TYPES.get(type(model), "an object")
        raise BadRequest(
            f"Invalid type for 'model': expected a string, but got {got} instead.",
            param="model",
            code="invalid_type",
        )
    return model


def serialise(payload: dict[str, Any]) -> bytes:
    """The body the upstream gets. orjson writes at most 254 levels (it reads 1,024): deeper
    than that, a body is refused like one that cannot be read."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        raise NestedTooDeeply() from None
