"""Single sign-on through a reverse proxy (``TOLLGATE_CONSOLE_PROXY_AUTH``).

An operator's proxy (oauth2-proxy, nginx ``auth_request``...) signs its users in with the
platform's own identity provider and sends each request on with that user's admin key as
``Authorization: Bearer sk-tg-admin-...``. A request carrying one, and no session bound to
that same key, signs in through the key service's sign-in endpoint (audited, as the form is),
starts a session bound to the key's SHA-256 and sets the session cookie; a session bound to
another key, or signed in by the form, ends first. A request without the header is left to
the cookie and the form. The CSRF defences stay the session's: a cross-site post through the
proxy gets a fresh session whose token the other site cannot know.
"""

from __future__ import annotations

import hmac
from typing import Literal

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console.session import COOKIE_NAME, Session, key_digest
from services.console.sign_ins import SignInRefused, SignInUnavailable
from services.console.web import Console, cookie_secure, render
from shared import apikeys
from shared.http import HttpMiddleware, bearer_token

# Paths a browser fetches along with a page: they never start a session of their own.
_PASSING = ("/static/", "/healthz")


def proxied_key(authorization: str | None) -> str | None:
    """The admin key a proxy sent (``Authorization: Bearer sk-tg-admin-...``), else None."""
    token = bearer_token(authorization)
    if token is None or not token.startswith(apikeys.ADMIN_PREFIX):
        return None
    return token


def binding(session: Session | None, digest: str) -> Literal["keep", "start"]:
    """``keep`` the session when it is bound to the key with this digest; else ``start`` a new
    one (the old one, if any, ends)."""
    bound = session.bound_key if session is not None else None
    return "keep" if bound is not None and hmac.compare_digest(bound, digest) else "start"


def _with_cookie(headers: list[tuple[bytes, bytes]], raw: str) -> list[tuple[bytes, bytes]]:
    """The request's headers, its session cookie replaced by raw (what the app sees)."""
    given = [v.decode("latin-1") for n, v in headers if n.lower() == b"cookie"]
    pairs = [
        pair.strip()
        for value in given
        for pair in value.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() != COOKIE_NAME
    ]
    pairs.append(f"{COOKIE_NAME}={raw}")
    kept = [(n, v) for n, v in headers if n.lower() != b"cookie"]
    return [*kept, (b"cookie", "; ".join(pairs).encode("latin-1"))]


class ProxySignInMiddleware(HttpMiddleware):
    """Sessions from a single sign-on proxy's admin key header (see the module's docstring)."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        super().__init__(app)
        self.console = console

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        key = proxied_key(request.headers.get("authorization"))
        if key is None or scope["path"].startswith(_PASSING):
            await self.app(scope, receive, send)
            return
        app = self.console
        cookie = request.cookies.get(COOKIE_NAME)
        digest = key_digest(key)
        if binding(app.sessions.get(cookie), digest) == "keep":
            await self.app(scope, receive, send)
            return
        app.sessions.delete(cookie)
        refusal = await self._sign_in(request, key, digest)
        if isinstance(refusal, Response):
            await refusal(scope, receive, send)
            return
        raw, set_cookie = refusal
        scope["headers"] = _with_cookie(scope["headers"], raw)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), set_cookie]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _sign_in(
        self, request: Request, key: str, digest: str
    ) -> Response | tuple[str, tuple[bytes, bytes]]:
        """A new session's cookie value and Set-Cookie header, or the page that refuses."""
        app = self.console
        client = request.client.host if request.client else "unknown"
        if app.throttle.blocked(client):
            return self._refusal(request, 429, "Too many failed sign-ins. Wait a minute.")
        try:
            principal = await app.sign_ins.check(key, client, request.headers.get("user-agent"))
        except SignInRefused:
            app.throttle.failed(client)
            return self._refusal(
                request,
                401,
                "The admin key your single sign-on sent is not active (revoked, rotated or"
                " unknown). Ask your administrator to renew it.",
            )
        except SignInUnavailable:
            return self._refusal(
                request,
                503,
                "The key service could not be reached to check your sign-in. Try again shortly.",
            )
        app.throttle.succeeded(client)
        raw, _ = app.sessions.create(SecretStr(key), principal, bound_key=digest)
        carrier = Response()
        carrier.set_cookie(
            COOKIE_NAME,
            raw,
            path="/",
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request, app.settings),
        )
        (set_cookie,) = [h for h in carrier.raw_headers if h[0] == b"set-cookie"]
        return raw, set_cookie

    def _refusal(self, request: Request, status: int, message: str) -> Response:
        title = {401: "Sign-in refused", 429: "Too many attempts"}.get(status, "Unavailable")
        context = {"title": title, "status": status, "message": message}
        return render(request, self.console, "error.html", context, status_code=status)
