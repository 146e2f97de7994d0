"""What every page shares: the app's state, the session dependencies, rendering.

A signed-out request is answered with a redirect to the sign-in page (``SignedOut``); a
state-changing request must come from this origin and carry the session's CSRF token
(``CsrfRefused``, 403); a route that needs a permission the session's principal lacks is
refused before any API call (``PermissionMissing``, 403 naming it). A signed-in route works
with ``SignedInDep``: the console acting as the session, its API clients carrying the
session's credential. Every page goes out with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.console import csrf
from services.console.access import Actions, Principal
from services.console.clients import ApiProblem, CostsApi, KeysApi, UsageApi
from services.console.session import COOKIE_NAME, Session, SessionStore, SignInThrottle
from services.console.settings import ConsoleSettings
from services.console.sign_ins import SignIns
from shared.events import Permission

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Console:
    """The app's long-lived parts, built once by the app factory; ``acting_as`` gives the
    same acting for one session (API clients bound to its credential, its principal)."""

    settings: ConsoleSettings
    sessions: SessionStore
    throttle: SignInThrottle
    sign_ins: SignIns
    keys: KeysApi
    usage: UsageApi
    costs: CostsApi
    templates: Jinja2Templates
    models: tuple[str, ...] = field(default=())
    principal: Principal | None = None  # set by acting_as only

    def acting_as(self, session: Session) -> Console:
        """This console for one request of session: every API call with its credential."""
        credential = session.credential
        return replace(
            self,
            keys=self.keys.bound(credential),
            usage=self.usage.bound(credential),
            costs=self.costs.bound(credential),
            principal=session.principal,
        )

    @property
    def who(self) -> Principal:
        """The principal of the session acted for."""
        if self.principal is None:
            raise RuntimeError("a console acting for no session")
        return self.principal

    @property
    def actions(self) -> Actions:
        """What the pages offer the session acted for."""
        return Actions.of(self.who)

    def check_scope(self, project_id: str) -> None:
        """The console's 404 for a project outside the session's scope (as one missing)."""
        if self.principal is not None and not self.principal.sees(project_id):
            raise ApiProblem(
                "console", 404, f"No project found with id '{project_id[:128]}'.", code="not_found"
            )


class SignedOut(Exception):
    """The request has no live session: send the browser to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__("signed out")
        self.next_path = next_path


class CsrfRefused(Exception):
    """A state-changing request without a valid CSRF token or from another origin."""


class PermissionMissing(Exception):
    """The session's principal lacks the permission a route needs (403, naming it)."""

    def __init__(self, permission: Permission) -> None:
        super().__init__(permission)
        self.permission = permission


async def console(request: Request) -> Console:
    """The app's Console."""
    found: Console = request.app.state.console
    return found


ConsoleDep = Annotated[Console, Depends(console)]


def safe_next(path: str | None) -> str:
    """A local path to go back to after signing in; anything else becomes ``/``."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    return path


async def current_session(request: Request, app: ConsoleDep) -> Session:
    """The live session of this request, or SignedOut."""
    session = app.sessions.get(request.cookies.get(COOKIE_NAME))
    if session is None:
        target = request.url.path if request.method == "GET" else "/"
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        raise SignedOut(safe_next(target))
    return session


SessionDep = Annotated[Session, Depends(current_session)]


async def checked_session(request: Request, session: SessionDep) -> Session:
    """The live session of a form post, refused unless it is same-origin with its token."""
    if not csrf.same_origin(request):
        raise CsrfRefused
    if not csrf.tokens_match(session.csrf_token, await csrf.form_token(request)):
        raise CsrfRefused
    return session


CheckedSessionDep = Annotated[Session, Depends(checked_session)]


async def signed_in(app: ConsoleDep, session: SessionDep) -> Console:
    """The console acting as this request's session."""
    return app.acting_as(session)


SignedInDep = Annotated[Console, Depends(signed_in)]


def allowed(permission: Permission) -> Any:
    """A page's dependency: PermissionMissing unless the session holds the permission."""

    async def guard(session: SessionDep) -> None:
        if not session.principal.can(permission):
            raise PermissionMissing(permission)

    return Depends(guard)


def allowed_form(permission: Permission) -> Any:
    """A form post's dependency: its CSRF check first, then the permission's."""

    async def guard(session: CheckedSessionDep) -> None:
        if not session.principal.can(permission):
            raise PermissionMissing(permission)

    return Depends(guard)


def cookie_secure(request: Request, settings: ConsoleSettings) -> bool:
    """Whether cookies get the Secure flag: always, never, or when the request was https."""
    if settings.secure_cookies == "auto":
        return request.url.scheme == "https"
    return settings.secure_cookies == "always"


def render(
    request: Request,
    app: Console,
    template: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page from template, with the session's CSRF token and flashes in its context."""
    principal = session.principal if session else None
    full = {
        "csrf_field": csrf.FIELD,
        "csrf_token": session.csrf_token if session else context.get("csrf_token", ""),
        "flashes": session.take_flashes() if session else [],
        "signed_in": session is not None,
        "principal": principal,
        "actions": Actions.of(principal) if principal else None,
        "single_sign_on": session is not None and session.bound_key is not None,
        "gateway_url": app.settings.gateway_url.rstrip("/"),
        **context,
    }
    response = app.templates.TemplateResponse(request, template, full, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response
