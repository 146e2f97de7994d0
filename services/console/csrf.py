"""Cross-site request forgery defences for every form.

Three layers: the session cookie is ``SameSite=Strict``; a form must carry the session's
synchronizer token (the sign-in form, before any session exists, a double-submit token tied
to a short-lived cookie of its own); and a request whose ``Origin`` (or else ``Referer``)
names another site is refused outright.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

FIELD = "csrf_token"
SIGNIN_COOKIE = "tollgate_console_signin"


def new_token() -> str:
    """A fresh unguessable token."""
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, submitted: str | None) -> bool:
    """Constant-time equality of two tokens; a missing one never matches."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # non-browser clients send neither; the token still has to match
    if source == "null":
        return False
    parts = urlsplit(source)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


async def form_token(request: Request) -> str | None:
    """The CSRF token a submitted form carries."""
    form = await request.form()
    value = form.get(FIELD)
    return value if isinstance(value, str) else None
