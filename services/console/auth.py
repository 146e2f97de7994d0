"""Sign-in with the operator token or an admin key, and sign-out.

The key service checks what was typed (``sign_ins``: audited either way, the operator token
still signing in by itself when the key service is down); the session keeps it in this
process's memory for the APIs it calls, and the browser gets only a random session id in an
HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import SecretStr

from services.console import csrf
from services.console.projects import project_page, visible_projects
from services.console.session import COOKIE_NAME
from services.console.sign_ins import SignInRefused, SignInUnavailable, identify
from services.console.web import (
    CheckedSessionDep,
    ConsoleDep,
    CsrfRefused,
    SignedInDep,
    cookie_secure,
    render,
    safe_next,
)
from shared import apikeys

router = APIRouter()

REFUSED = "That is neither the operator token nor an active admin key. Check it and try again."
UNAVAILABLE = (
    "The key service could not be reached, so an admin key cannot be checked now. Try again"
    " in a moment."
)


def _signin_page(
    request: Request,
    app: ConsoleDep,
    *,
    next_path: str,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = csrf.new_token()
    context = {
        "title": "Sign in",
        "csrf_token": token,
        "next": next_path,
        "error": error,
        "notice": notice,
    }
    response = render(request, app, "signin.html", context, status_code=status_code)
    response.set_cookie(
        csrf.SIGNIN_COOKIE,
        token,
        max_age=3600,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, app.settings),
    )
    return response


@router.get("/signin", response_model=None)
async def signin_form(
    request: Request, app: ConsoleDep, next: str = "/", signed_out: int = 0, expired: int = 0
) -> Response:
    """The sign-in form (straight on to the console when already signed in)."""
    if app.sessions.get(request.cookies.get(COOKIE_NAME)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    notice = "You have signed out." if signed_out else None
    if expired:
        notice = "Your session ended: its admin key is no longer accepted. Sign in again."
    return _signin_page(request, app, next_path=safe_next(next), notice=notice)


@router.post("/signin", response_model=None)
async def signin(
    request: Request,
    app: ConsoleDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Check the operator token or admin key with the key service; on success start a
    session and go where the user was going."""
    if not csrf.same_origin(request) or not csrf.tokens_match(
        request.cookies.get(csrf.SIGNIN_COOKIE), csrf_token
    ):
        raise CsrfRefused
    # The peer's address: X-Forwarded-For is believed only from the proxies an operator lists
    # (TOLLGATE_HTTP_FORWARDED_ALLOW_IPS, shared.http_server), so no one can forge another's.
    client = request.client.host if request.client else "unknown"
    target = safe_next(next)
    if app.throttle.blocked(client):
        return _signin_page(
            request,
            app,
            next_path=target,
            error="Too many failed attempts. Wait a minute, then try again.",
            status_code=429,
        )
    credential = token.strip()
    try:
        principal = await identify(
            app.sign_ins,
            app.settings.admin_token,
            credential,
            ip=client,
            user_agent=request.headers.get("user-agent"),
        )
    except SignInRefused:
        app.throttle.failed(client)
        return _signin_page(request, app, next_path=target, error=REFUSED, status_code=401)
    except SignInUnavailable:
        # Not the operator token either: a failed guess at it counts, whatever else it was.
        app.throttle.failed(client)
        if apikeys.is_well_formed_admin(credential):
            return _signin_page(request, app, next_path=target, error=UNAVAILABLE, status_code=503)
        return _signin_page(request, app, next_path=target, error=REFUSED, status_code=401)
    app.throttle.succeeded(client)
    # A new session id on every sign-in: a planted cookie can never become a signed-in one.
    app.sessions.delete(request.cookies.get(COOKIE_NAME))
    raw, _ = app.sessions.create(SecretStr(credential), principal)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        raw,
        path="/",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, app.settings),
    )
    response.delete_cookie(csrf.SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout", response_model=None)
async def signout(request: Request, app: ConsoleDep, _: CheckedSessionDep) -> Response:
    """End the session and forget its cookie."""
    app.sessions.delete(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/", response_model=None)
async def home(app: SignedInDep) -> Response:
    """The first project's API keys (or Usage, for who may not see keys), or the projects
    page when there is none."""
    projects = await visible_projects(app)
    page = project_page(app.actions)
    if projects and page:
        return RedirectResponse(f"/projects/{projects[0]['id']}/{page}", status_code=303)
    return RedirectResponse("/projects", status_code=303)
