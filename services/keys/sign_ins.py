"""Console sign-ins: the console asks here who a credential is, and every answer is audited.

The console (services/console) holds no table of its own: a person signs in with the operator
token or an admin key, the console posts it here with the browser's address and User-Agent
(guarded by the internal token, so that only the console can write those), and the key service
answers the principal (root, or the admin key's scope and permissions) and writes
``login.succeeded`` or ``login.failed`` to the audit log in one transaction. The actor of
either entry is the console session: signed in as root or an admin key, or ``anonymous``. The
credential itself is compared or hashed, never stored, logged or echoed.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from services.keys.access import clipped, context_of
from services.keys.admin_key_cache import AdminKeyCache
from services.keys.api import ServiceDep
from services.keys.audit import AuditContext
from services.keys.errors import DatabaseUnavailable
from services.keys.settings import KeysSettings
from services.keys.transactions import OUTAGE
from shared import apikeys
from shared.access import ROOT, Principal
from shared.errors import Unauthorized
from shared.events import USER_AGENT_MAX, AuditActor, utc_now
from shared.http import require_bearer, token_matches
from shared.openapi import error_responses

CREDENTIAL_MAX = 512
FailureReason = Literal["api_key", "unknown_admin_key", "revoked_admin_key", "not_a_credential"]


class SignInRequest(BaseModel):
    """What the console passes on of a sign-in attempt."""

    model_config = ConfigDict(extra="forbid")

    credential: str = Field(max_length=CREDENTIAL_MAX, description="what the person typed")
    ip: str | None = Field(None, max_length=256, description="the browser's address")
    user_agent: str | None = Field(
        None, max_length=8192, description=f"the browser's User-Agent (kept: {USER_AGENT_MAX})"
    )


class SignedInPrincipal(BaseModel):
    """Who signed in: root, or an admin key (its scope and permissions)."""

    type: Literal["root", "admin_key"]
    id: str
    name: str | None
    hint: str | None
    organization: bool
    project_ids: list[str]
    permissions: list[str]


class SignIn(BaseModel):
    object: Literal["console_sign_in"] = "console_sign_in"
    principal: SignedInPrincipal


_REFUSED = "That is neither the operator token nor an active admin key."


async def _identify(
    request: Request, credential: str
) -> tuple[Principal | None, str | None, FailureReason | None, str | None]:
    """The principal and admin key name of a credential; else why not (and the admin key's id
    when the credential named a known one)."""
    settings: KeysSettings = request.app.state.settings
    if token_matches(credential, settings.admin_token):
        return ROOT, None, None, None
    if apikeys.is_well_formed_admin(credential):
        cache: AdminKeyCache = request.app.state.admin_keys
        state = await cache.get(apikeys.hash_key(credential))
        if state is None:
            return None, None, "unknown_admin_key", None
        if state.status != "active":
            return None, None, "revoked_admin_key", state.id
        return Principal.of(state), state.name, None, None
    if apikeys.is_well_formed(credential):
        return None, None, "api_key", None
    return None, None, "not_a_credential", None


def sign_in_router(settings: KeysSettings) -> APIRouter:
    """``POST /internal/v1/console_sign_ins``, for the console only (the internal token)."""
    router = APIRouter(
        prefix="/internal/v1",
        dependencies=[Depends(require_bearer(settings.internal_token, "internal token"))],
    )

    @router.post(
        "/console_sign_ins", response_model=SignIn, responses=error_responses(400, 401, 503)
    )
    async def sign_in(body: SignInRequest, request: Request, service: ServiceDep) -> SignIn:
        """Who the credential is (200) or 401; either way one audit entry, in its transaction."""
        try:
            principal, name, reason, named = await _identify(request, body.credential.strip())
        except OUTAGE as exc:
            raise DatabaseUnavailable("The key database is unavailable; retry shortly.") from exc
        base = context_of(request, ROOT)
        context = AuditContext(
            actor=AuditActor(
                type="console_session",
                id=principal.id if principal else "anonymous",
                hint=principal.hint if principal else None,
            ),
            ip=clipped(body.ip, 64),
            user_agent=clipped(body.user_agent, USER_AGENT_MAX),
            request_id=base.request_id,
        )
        as_what = None if principal is None else principal.kind
        async with service.transaction() as conn:
            await service.audit(
                conn,
                context,
                "login.failed" if principal is None else "login.succeeded",
                project_id=None,
                resource_id=(principal.id if principal else named) or "console",
                before=None,
                after={"signed_in_as": as_what} if principal else {"reason": reason},
                now=utc_now(),
            )
        if principal is None:
            raise Unauthorized(_REFUSED, code="invalid_credentials")
        return SignIn(
            principal=SignedInPrincipal(
                type=principal.kind,
                id=principal.id,
                name=name,
                hint=principal.hint,
                organization=principal.organization,
                project_ids=sorted(principal.project_ids),
                permissions=sorted(principal.permissions),
            )
        )

    return router
