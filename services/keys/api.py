"""The key service's HTTP API: management (operator token or an admin key, ``access.py``),
verify (internal token), health."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from services.keys import repository as repo
from services.keys.access import Caller, allowed
from services.keys.policies import KEY_FIELDS, budget_of, rate_limits_of
from services.keys.rows import Row
from services.keys.schemas import (
    ApiKey,
    ApiKeyWithSecret,
    CreateKey,
    CreateProject,
    KeyDeleted,
    KeyList,
    Project,
    ProjectList,
    RotateKey,
    UpdateKey,
    UpdateProject,
    VerifyRequest,
    unix,
)
from services.keys.service import KeyService, view_status
from services.keys.settings import KeysSettings
from shared.errors import InsufficientPermissions, NotFound
from shared.events import KeyState, utc_now
from shared.exactly_once.retry import READ_ERRORS
from shared.http import liveness_router, require_bearer
from shared.openapi import NO_NUL, error_responses

ProjectId = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL)]
KeyId = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL)]
Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
After = Annotated[
    str | None,
    Query(
        max_length=128,
        pattern=NO_NUL,
        description="the id of the last item seen (a page's `last_id`); an id that is no "
        "item's of this list is refused (400)",
    ),
]
# The errors each kind of route can answer (shared/openapi.py documents them).
MANAGING = error_responses(400, 401, 403, 503)
IN_PROJECT = error_responses(400, 401, 403, 404, 503)
CHANGING_A_KEY = error_responses(400, 401, 403, 404, 409, 503)


def _service(request: Request) -> KeyService:
    service: KeyService = request.app.state.service
    return service


ServiceDep = Annotated[KeyService, Depends(_service)]
ProjectsRead = Annotated[Caller, Depends(allowed("projects:read"))]
ProjectsWrite = Annotated[Caller, Depends(allowed("projects:write"))]
KeysRead = Annotated[Caller, Depends(allowed("keys:read"))]
KeysWrite = Annotated[Caller, Depends(allowed("keys:write"))]
_Page = TypeVar("_Page", ProjectList, KeyList)


def project_view(row: Row) -> Project:
    """A project row as the API shows it."""
    return Project(
        id=row["id"],
        name=row["name"],
        created_at=int(row["created_at"].timestamp()),
        rate_limits=rate_limits_of(row["rate_limits"]),
        budget=budget_of(row["budget"]),
    )


def key_view(row: Row) -> ApiKey:
    """A key row as the API shows it: never the secret, nor its hash."""
    return ApiKey(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        hint=row["hint"],
        status=view_status(row, utc_now()),
        is_default=row["is_default"],
        created_at=int(row["created_at"].timestamp()),
        last_used_at=unix(row["last_used_at"]),
        expires_at=unix(row["expires_at"]),
        rotated_at=unix(row["rotated_at"]),
        previous_key_valid_until=unix(row["previous_valid_until"]),
        revoked_at=unix(row["revoked_at"]),
        rate_limits=rate_limits_of(row["rate_limits"]),
        budget=budget_of(row["budget"]),
        allowed_models=row["allowed_models"],
        allowed_endpoints=row["allowed_endpoints"],
    )


def list_page(kind: type[_Page], data: list[Any], more: bool) -> _Page:
    """A page of a list answer, as OpenAI's lists: the items, the first and last ids (the
    cursors for ``after``; null on an empty page) and whether more follow."""
    return kind(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


def management_router() -> APIRouter:
    """Projects and keys, for the operator token or an admin key with the route's permission
    (a project outside its scope is answered as one that does not exist)."""
    router = APIRouter(prefix="/v1/projects")

    @router.post("", status_code=201, response_model=Project, responses=MANAGING)
    async def create_project(
        body: CreateProject, caller: ProjectsWrite, service: ServiceDep
    ) -> Project:
        """Create a project (root, or an admin key scoped to the organization)."""
        if not caller.principal.organization:
            raise InsufficientPermissions(
                "organization scope",
                "Creating a project needs an admin key scoped to the whole organization.",
            )
        return project_view(await service.create_project(body.name, caller.context))

    @router.get("", response_model=ProjectList, responses=MANAGING)
    async def list_projects(
        caller: ProjectsRead, service: ServiceDep, limit: Limit = 20, after: After = None
    ) -> ProjectList:
        """List the projects in the caller's scope, oldest first."""
        rows, more = await service.list_projects(limit, after, caller.principal.within)
        return list_page(ProjectList, [project_view(r) for r in rows], more)

    @router.get("/{project_id}", response_model=Project, responses=IN_PROJECT)
    async def get_project(
        project_id: ProjectId, caller: ProjectsRead, service: ServiceDep
    ) -> Project:
        """Get a project."""
        return project_view(await service.get_project(caller.project(project_id)))

    @router.patch("/{project_id}", response_model=Project, responses=IN_PROJECT)
    async def update_project(
        project_id: ProjectId, body: UpdateProject, caller: ProjectsWrite, service: ServiceDep
    ) -> Project:
        """Rename a project or change its limits: fields left out stay, null removes a limit.

        A limits change re-publishes every active key of the project (key.updated), since
        each key's state carries its project's limits.
        """
        changes = {f: getattr(body, f) for f in body.model_fields_set}
        project_id = caller.project(project_id)
        return project_view(await service.update_project(project_id, changes, caller.context))

    @router.post(
        "/{project_id}/keys", status_code=201, response_model=ApiKeyWithSecret, responses=IN_PROJECT
    )
    async def create_key(
        *,
        project_id: ProjectId,
        body: CreateKey,
        caller: KeysWrite,
        service: ServiceDep,
        response: Response,
    ) -> ApiKeyWithSecret:
        """Create a key; its secret is in this answer only."""
        policy = {f: getattr(body, f) for f in KEY_FIELDS}
        created = await service.create_key(
            caller.project(project_id), body.name, body.expires_at, policy, caller.context
        )
        response.headers["Cache-Control"] = "no-store"
        return ApiKeyWithSecret(**key_view(created.row).model_dump(), key=created.secret)

    @router.get("/{project_id}/keys", response_model=KeyList, responses=IN_PROJECT)
    async def list_keys(
        *,
        project_id: ProjectId,
        caller: KeysRead,
        service: ServiceDep,
        limit: Limit = 20,
        after: After = None,
        include_revoked: bool = False,
    ) -> KeyList:
        """List the project's keys, oldest first; revoked ones only with include_revoked."""
        rows, more = await service.list_keys(
            caller.project(project_id), include_revoked=include_revoked, limit=limit, after=after
        )
        return list_page(KeyList, [key_view(r) for r in rows], more)

    @router.get("/{project_id}/keys/{key_id}", response_model=ApiKey, responses=IN_PROJECT)
    async def get_key(
        project_id: ProjectId, key_id: KeyId, caller: KeysRead, service: ServiceDep
    ) -> ApiKey:
        """Get a key (never its secret)."""
        return key_view(await service.get_key(caller.project(project_id), key_id))

    @router.patch("/{project_id}/keys/{key_id}", response_model=ApiKey, responses=CHANGING_A_KEY)
    async def update_key(
        *,
        project_id: ProjectId,
        key_id: KeyId,
        body: UpdateKey,
        caller: KeysWrite,
        service: ServiceDep,
    ) -> ApiKey:
        """Rename a key or change its policy: fields left out stay, null removes a limit."""
        changes = {f: getattr(body, f) for f in body.model_fields_set}
        project_id = caller.project(project_id)
        return key_view(await service.update_key(project_id, key_id, changes, caller.context))

    @router.delete(
        "/{project_id}/keys/{key_id}", response_model=KeyDeleted, responses=CHANGING_A_KEY
    )
    async def revoke_key(
        project_id: ProjectId, key_id: KeyId, caller: KeysWrite, service: ServiceDep
    ) -> KeyDeleted:
        """Revoke a key: it stops working for good."""
        row = await service.revoke_key(caller.project(project_id), key_id, caller.context)
        return KeyDeleted(id=row["id"])

    @router.post(
        "/{project_id}/keys/{key_id}/default", response_model=ApiKey, responses=CHANGING_A_KEY
    )
    async def set_default(
        project_id: ProjectId, key_id: KeyId, caller: KeysWrite, service: ServiceDep
    ) -> ApiKey:
        """Make a key the project's default (at most one per project)."""
        return key_view(
            await service.set_default(caller.project(project_id), key_id, caller.context)
        )

    @router.post(
        "/{project_id}/keys/{key_id}/rotate",
        response_model=ApiKeyWithSecret,
        responses=CHANGING_A_KEY,
    )
    async def rotate_key(
        *,
        project_id: ProjectId,
        key_id: KeyId,
        caller: KeysWrite,
        service: ServiceDep,
        response: Response,
        body: RotateKey | None = None,
    ) -> ApiKeyWithSecret:
        """Give a key a new secret, shown this once; the old one lasts the grace period."""
        grace = body.grace_period_seconds if body is not None else 0
        project_id = caller.project(project_id)
        created = await service.rotate_key(project_id, key_id, grace, caller.context)
        response.headers["Cache-Control"] = "no-store"
        return ApiKeyWithSecret(**key_view(created.row).model_dump(), key=created.secret)

    return router


def internal_router(settings: KeysSettings) -> APIRouter:
    """The gateway's verify endpoint, guarded by the internal token (not the operator's)."""
    router = APIRouter(
        prefix="/internal/v1",
        dependencies=[Depends(require_bearer(settings.internal_token, "internal token"))],
    )

    @router.post(
        "/keys/verify", response_model=KeyState, responses=error_responses(400, 401, 404, 503)
    )
    async def verify(body: VerifyRequest, service: ServiceDep) -> KeyState:
        """The state of the key with this hash (or old hash still in grace); 404 when none."""
        state = await service.verify(body.key_hash)
        if state is None:
            raise NotFound("No API key has this hash.", param="key_hash")
        return state

    return router


health_router = liveness_router()


@health_router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """The database answers; the relay's backlog and Kafka state are reported alongside."""
    relay = request.app.state.relay
    body: dict[str, object] = {"status": "ok"}
    if relay is not None:
        body |= relay.stats()
    if (mirror := getattr(request.app.state, "mirror", None)) is not None:
        body |= mirror.stats()  # the direct Redis writes: written, failed, last error
    if (admin_keys := getattr(request.app.state, "admin_keys", None)) is not None:
        body |= admin_keys.stats()  # listening for changes, entries, hits, misses
    states = getattr(request.app.state, "admin_key_states", None)
    if states is not None:
        body |= states.stats()  # fresh, how many, followers (metering, billing, console)
    consumer = request.app.state.consumer
    if consumer is not None:
        body |= consumer.stats()
    # Each background worker's lifecycle: running, restarts, last error (shared/worker.py).
    partitions = getattr(request.app.state, "partitions", None)
    workers = (relay, consumer, admin_keys, states, partitions)
    body["workers"] = {w.worker.name: w.worker.health() for w in workers if w is not None}
    try:
        body["outbox_backlog"] = await repo.outbox_backlog(request.app.state.pool)
    except READ_ERRORS:
        return JSONResponse({**body, "status": "database unavailable"}, status_code=503)
    return JSONResponse(body)
