"""Who is calling the management API, and what they may do (README.md: "Access").

Three kinds of secret, told apart by their marker: the operator token (root: everything), an
admin key (``sk-tg-admin-...``: its permissions, within its scope) and an API key
(``sk-tg-...``: inference only, never a management credential). A route names the permission
it needs (``allowed``); a project outside the caller's scope is answered exactly as a project
that does not exist (``Caller.project``), so an admin key learns nothing of other projects.

Every change a caller makes is recorded in the audit log with ``Caller.context``: the actor,
the client's address, its User-Agent and the request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, Request

from services.keys.admin_key_cache import AdminKeyCache
from services.keys.audit import AuditContext
from services.keys.errors import DatabaseUnavailable, ProjectNotFound
from services.keys.transactions import OUTAGE
from shared import apikeys
from shared.access import PROJECT_ID_PATH_MAX, ROOT, UNAUTHORIZED, Principal
from shared.errors import Unauthorized
from shared.events import USER_AGENT_MAX, Permission
from shared.http import bearer_token, token_matches


@dataclass(frozen=True)
class Caller:
    """An authenticated caller of a route that it is allowed to call."""

    principal: Principal
    context: AuditContext

    def project(self, project_id: str) -> str:
        """The project id when in scope; else ProjectNotFound, the body a missing one gets."""
        if not self.principal.sees(project_id):
            raise ProjectNotFound(project_id)
        return project_id


def clipped(text: str | None, limit: int) -> str | None:
    """At most limit characters of text, each unprintable one as '?'; None for none."""
    if text is None:
        return None
    kept = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return kept or None


def context_of(request: Request, principal: Principal) -> AuditContext:
    """The audit context of a request: actor, client address, User-Agent, request id."""
    client = request.client
    return AuditContext(
        actor=principal.actor,
        ip=clipped(client.host if client else None, 64),
        user_agent=clipped(request.headers.get("user-agent"), USER_AGENT_MAX),
        request_id=getattr(request.state, "request_id", None),
    )


async def authenticate(request: Request, authorization: str | None) -> Principal:
    """Root for the operator token, the admin key's principal for an active admin key; 401
    for anything else (an API key, a revoked or unknown admin key, no token)."""
    token = bearer_token(authorization)
    if token_matches(token, request.app.state.settings.admin_token):
        return ROOT
    if token is None or not apikeys.is_well_formed_admin(token):
        raise Unauthorized(UNAUTHORIZED, code="invalid_api_key")
    cache: AdminKeyCache = request.app.state.admin_keys
    try:
        state = await cache.get(apikeys.hash_key(token))
    except OUTAGE as exc:
        raise DatabaseUnavailable("The key database is unavailable; retry shortly.") from exc
    if state is None or state.status != "active":
        raise Unauthorized(UNAUTHORIZED, code="invalid_api_key")
    return Principal.of(state)


def allowed(*permissions: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, authenticated and holding every one of the permissions."""

    async def guard(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Caller:
        principal = await authenticate(request, authorization)
        for permission in permissions:
            principal.require(permission)
        caller = Caller(principal, context_of(request, principal))
        # Out of scope before the body is read: a bad body must not tell a project exists.
        project_id = request.path_params.get("project_id")
        if isinstance(project_id, str) and len(project_id) <= PROJECT_ID_PATH_MAX:
            caller.project(project_id)
        return caller

    return guard


def missing(principal: Principal, wanted: Collection[str]) -> str | None:
    """The first of wanted that the principal does not hold, or None."""
    return next((p for p in wanted if p not in principal.permissions), None)
