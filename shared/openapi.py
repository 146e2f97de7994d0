"""What the OpenAPI documents of the management APIs say, so that they say what the servers do.

Every error is answered in OpenAI's shape (``shared/errors.py``): ``ErrorResponse`` documents
it, and ``error_responses(400, 401, ...)`` lists the statuses a route can give, in its
decorator's ``responses=``. ``install_openapi`` serves the app's document with the truths
FastAPI's generator does not know:

- no 422: ``install_error_handlers`` answers a request that breaks the document 400;
- the credential is a bearer token (a security scheme), not a header parameter: the operator
  token or an admin key on ``/v1/``, the internal token on ``/internal/``;
- what only the running app knows (the catalogue's model ids, a setting's bound), by the app's
  ``refine``.

The patterns below state in the documents what the validators refuse, for the tools that read
them (tests/foundation/test_openapi_unit.py holds each to its validator).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

# PostgreSQL's text cannot hold NUL: an id or cursor with one is refused (400), not looked up.
NO_NUL = r"^[^\x00]*$"
# shared.events.free_text: no C0 control character nor DEL; and, as a name is trimmed
# (str.strip), one character at least that Python calls a space (listed: \s differs between
# Python and ECMA 262, which the documents' readers use).
_SPACES = r"\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_FREE_TEXT = rf"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f{_SPACES}][^\x00-\x1f\x7f]*$"

_DESCRIPTIONS = {
    400: "The request breaks a rule of this document (a parameter or a field of the body, "
    "named in `param`), or names what does not exist in a parameter that must (a cursor).",
    401: "No credential, or one that is not accepted here (code `invalid_api_key`).",
    403: "The admin key lacks a permission this request needs (code "
    "`insufficient_permissions`, the permission named in the message).",
    404: "No such resource; a project outside the admin key's scope is answered the same.",
    409: "The resource is in a state that forbids the change (revoked, expired).",
    503: "A store this request needs is unavailable; retry shortly (code `service_unavailable`).",
}
_INTERNAL = "/internal/"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "operator": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator token (everything) or an admin key (`sk-tg-admin-...`: "
        "its permissions, within its scope). API keys manage nothing.",
    },
    "internal": {
        "type": "http",
        "scheme": "bearer",
        "description": "The internal token the gateways, the console and the ledger services "
        "hold (never the operator token).",
    },
}


class ErrorDetail(BaseModel):
    """What went wrong, as OpenAI's API says it."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="for a person to read")
    type: str = Field(
        description="`invalid_request_error`, or `server_error` (500, 503)",
        examples=["invalid_request_error"],
    )
    code: str | None = Field(
        description="a machine-readable reason, or null", examples=["not_found"]
    )
    param: str | None = Field(
        description="the parameter or field at fault (nested fields dotted), or null",
        examples=["name"],
    )


class ErrorResponse(BaseModel):
    """Every error answer: OpenAI's shape."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these error statuses."""
    return {
        code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in sorted(codes)
    }


def nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every object in a JSON document, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from nodes(item)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, operation


def truthful(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document without its 422 answers (errors are 400 here) and with the bearer
    credential as a security scheme instead of an ``authorization`` header parameter."""
    secured = False
    for path, operation in _operations(doc):
        operation["responses"].pop("422", None)
        params = operation.get("parameters", [])
        kept = [p for p in params if (p.get("in"), p.get("name")) != ("header", "authorization")]
        if len(kept) != len(params):
            scheme = "internal" if path.startswith(_INTERNAL) else "operator"
            operation["security"] = [{scheme: []}]
            secured = True
            if kept:
                operation["parameters"] = kept
            else:
                operation.pop("parameters")
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in _refs(doc, unused):
            schemas.pop(unused, None)
    if secured:
        used = {name for _, op in _operations(doc) for s in op.get("security", []) for name in s}
        doc.setdefault("components", {})["securitySchemes"] = {
            name: scheme for name, scheme in SECURITY_SCHEMES.items() if name in used
        }
    return doc


def _refs(doc: dict[str, Any], skip: str) -> set[str]:
    """Every $ref in doc outside the component named skip."""
    found = set()
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        if name != skip:
            found |= {n["$ref"] for n in nodes(schema) if "$ref" in n}
    found |= {n["$ref"] for n in nodes(doc.get("paths", {})) if "$ref" in n}
    return found


def install_openapi(app: FastAPI, refine: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Serve the app's document made truthful, then refined by what the running app knows
    (``refine`` changes the document in place; it is called on every request for it)."""
    generate = app.openapi  # FastAPI's own, which caches what it generates

    def openapi() -> dict[str, Any]:
        doc = truthful(copy.deepcopy(generate()))
        if refine is not None:
            refine(doc)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
