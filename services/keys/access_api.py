"""The organization API: admin keys (``admin_keys:write``) and the audit log (``audit:read``),
each open to the operator token too. HTTP only: ``admin_keys.py`` and ``audit.py`` decide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.keys.access import Caller, allowed
from services.keys.access_models import (
    AdminApiKey,
    AdminApiKeyWithValue,
    AdminKeyDeleted,
    AdminKeyList,
    AuditLog,
    AuditLogList,
    CreateAdminKey,
)
from services.keys.admin_keys import scope_of
from services.keys.api import After, Limit, ServiceDep
from services.keys.audit import read_page
from services.keys.audit_repository import AuditQuery
from services.keys.rows import Row, json_value
from services.keys.schemas import unix
from shared.events import AuditActor, AuditEventType
from shared.openapi import NO_NUL, error_responses

AdminKeyId = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL)]
AdminWrite = Annotated[Caller, Depends(allowed("admin_keys:write"))]
AuditRead = Annotated[Caller, Depends(allowed("audit:read"))]
Ids = Annotated[
    list[Annotated[str, Query(max_length=128, pattern=NO_NUL)]] | None, Query(max_length=100)
]
MOMENT_MAX = 253402300799  # 9999-12-31T23:59:59Z
Moment = Annotated[int | None, Query(ge=0, le=MOMENT_MAX)]  # Unix seconds
Cursor = Annotated[
    str | None,
    Query(
        max_length=128,
        pattern=NO_NUL,
        description="the id of an entry of this log; an id that is no entry's is refused (400)",
    ),
]
# The errors each kind of route can answer (shared/openapi.py documents them).
MANAGING = error_responses(400, 401, 403, 503)
ONE_KEY = error_responses(400, 401, 403, 404, 503)
CHANGING_ONE_KEY = error_responses(400, 401, 403, 404, 409, 503)


def admin_key_view(row: Row) -> AdminApiKey:
    """An admin key row as the API shows it: never the secret, nor its hash."""
    return AdminApiKey(
        id=row["id"],
        name=row["name"],
        redacted_value=row["hint"],
        created_at=int(row["created_at"].timestamp()),
        last_used_at=unix(row["last_used_at"]),
        owner=AuditActor.model_validate(json_value(row["owner"])),
        scope=scope_of(row),
        permissions=list(row["permissions"]),
        status=row["status"],
        rotated_at=unix(row["rotated_at"]),
        revoked_at=unix(row["revoked_at"]),
    )


def audit_view(row: Row) -> AuditLog:
    """An audit log row as the API shows it."""
    return AuditLog(
        id=row["id"],
        type=row["type"],
        effective_at=int(row["effective_at"].timestamp()),
        actor=AuditActor(type=row["actor_type"], id=row["actor_id"], hint=row["actor_hint"]),
        project_id=row["project_id"],
        resource_id=row["resource_id"],
        changes=json_value(row["changes"]),
        ip=row["ip"],
        user_agent=row["user_agent"],
        request_id=row["request_id"],
    )


def _changed_here(request: Request, key_id: str) -> None:
    """Drop the key's cached states on this replica now, not when the change's NOTIFY comes
    back (the others drop theirs on it): the caller's next call here must see the change."""
    request.app.state.admin_keys.forget(key_id)
    request.app.state.admin_key_states.changed(key_id)


def _at(seconds: int | None, shift: int = 0) -> datetime | None:
    if seconds is None:
        return None
    if seconds + shift > MOMENT_MAX:  # after 9999's last second: the end of time Python has
        return datetime.max.replace(tzinfo=UTC)
    return datetime.fromtimestamp(seconds + shift, UTC)


def organization_router() -> APIRouter:
    """Admin keys and audit logs under ``/v1/organization``."""
    router = APIRouter(prefix="/v1/organization")

    @router.post(
        "/admin_api_keys",
        status_code=201,
        response_model=AdminApiKeyWithValue,
        responses=MANAGING,
    )
    async def create_admin_key(
        body: CreateAdminKey, caller: AdminWrite, service: ServiceDep, response: Response
    ) -> AdminApiKeyWithValue:
        """Create an admin key; its secret is in this answer only."""
        created = await service.create_admin_key(
            caller.principal,
            caller.context,
            name=body.name,
            project_ids=body.scope.project_ids,
            permissions=body.permissions,
        )
        response.headers["Cache-Control"] = "no-store"
        return AdminApiKeyWithValue(
            **admin_key_view(created.row).model_dump(), value=created.secret
        )

    @router.get("/admin_api_keys", response_model=AdminKeyList, responses=MANAGING)
    async def list_admin_keys(
        caller: AdminWrite, service: ServiceDep, limit: Limit = 20, after: After = None
    ) -> AdminKeyList:
        """List the admin keys this caller could have created, oldest first."""
        rows, more = await service.list_admin_keys(caller.principal, limit, after)
        data = [admin_key_view(r) for r in rows]
        return AdminKeyList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    @router.get("/admin_api_keys/{key_id}", response_model=AdminApiKey, responses=ONE_KEY)
    async def get_admin_key(
        key_id: AdminKeyId, caller: AdminWrite, service: ServiceDep
    ) -> AdminApiKey:
        """Get an admin key (never its secret)."""
        return admin_key_view(await service.get_admin_key(caller.principal, key_id))

    @router.delete(
        "/admin_api_keys/{key_id}", response_model=AdminKeyDeleted, responses=CHANGING_ONE_KEY
    )
    async def revoke_admin_key(
        key_id: AdminKeyId, caller: AdminWrite, service: ServiceDep, request: Request
    ) -> AdminKeyDeleted:
        """Revoke an admin key: this replica refuses it at once, every other within a second."""
        row = await service.revoke_admin_key(caller.principal, caller.context, key_id)
        _changed_here(request, row["id"])
        return AdminKeyDeleted(id=row["id"])

    @router.post(
        "/admin_api_keys/{key_id}/rotate",
        response_model=AdminApiKeyWithValue,
        responses=CHANGING_ONE_KEY,
    )
    async def rotate_admin_key(
        key_id: AdminKeyId,
        caller: AdminWrite,
        service: ServiceDep,
        response: Response,
        request: Request,
    ) -> AdminApiKeyWithValue:
        """Give an admin key a new secret, shown this once; the old one stops at once."""
        created = await service.rotate_admin_key(caller.principal, caller.context, key_id)
        _changed_here(request, created.row["id"])
        response.headers["Cache-Control"] = "no-store"
        return AdminApiKeyWithValue(
            **admin_key_view(created.row).model_dump(), value=created.secret
        )

    @router.get("/audit_logs", response_model=AuditLogList, responses=MANAGING)
    async def audit_logs(
        *,
        caller: AuditRead,
        service: ServiceDep,
        gt: Annotated[Moment, Query(alias="effective_at[gt]")] = None,
        gte: Annotated[Moment, Query(alias="effective_at[gte]")] = None,
        lt: Annotated[Moment, Query(alias="effective_at[lt]")] = None,
        lte: Annotated[Moment, Query(alias="effective_at[lte]")] = None,
        project_ids: Annotated[Ids, Query(alias="project_ids[]")] = None,
        event_types: Annotated[
            list[AuditEventType] | None, Query(alias="event_types[]", max_length=20)
        ] = None,
        actor_ids: Annotated[Ids, Query(alias="actor_ids[]")] = None,
        resource_ids: Annotated[Ids, Query(alias="resource_ids[]")] = None,
        limit: Limit = 20,
        after: Cursor = None,
        before: Cursor = None,
    ) -> AuditLogList:
        """The audit log, newest first; a project-scoped admin key sees its projects' only."""
        # Entries show whole seconds: "after second T" starts at T + 1, "up to T" includes
        # all of second T, so a filter never splits the second an entry shows.
        lower = [m for m in (_at(gt, 1), _at(gte)) if m is not None]
        upper = [m for m in (_at(lt), _at(lte, 1)) if m is not None]
        query = AuditQuery(
            gte=max(lower, default=None),
            lt=min(upper, default=None),
            project_ids=project_ids or (),
            event_types=event_types or (),
            actor_ids=actor_ids or (),
            resource_ids=resource_ids or (),
            within=caller.principal.within,
        )
        async with service.transaction() as conn:
            rows, more = await read_page(conn, query, limit=limit, after=after, before=before)
        data = [audit_view(r) for r in rows]
        return AuditLogList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    return router
