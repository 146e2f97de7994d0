"""The request body: read once within its bound, parsed strictly, its model checked.

orjson is stricter than the standard library where a lenient parser lets through what a
later step cannot handle: it refuses invalid UTF-8, lone surrogates (``"\\ud800"``), NaN and
Infinity, and nesting deeper than 1,024 levels. Each is a 400 in OpenAI's shape, never a 500,
and the connection stays usable (the whole body has been read).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from services.gateway.errors import InvalidJson, NestedTooDeeply, PayloadTooLarge
from shared.errors import BadRequest

_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a decimal", list: "an array"}


async def read_body(request: Request, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """The parsed JSON object and the bytes it came as; 413 past max_bytes, 400 if not JSON."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > max_bytes
    chunks: list[bytes] = []
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
        chunks.append(chunk)
    if too_big:
        raise PayloadTooLarge(max_bytes)
    raw = b"".join(chunks)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise NestedTooDeeply() from None
        raise InvalidJson() from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    return payload, raw


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
    """A rewritten body. orjson writes at most 254 levels (it reads 1,024): deeper than that,
    a body that must be rewritten is refused like one that cannot be read."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        raise NestedTooDeeply() from None
