"""Who calls a management API, and what they may do (README.md: "Access").

Three kinds of secret, told apart by their marker: the operator token (root: everything), an
admin key (``sk-tg-admin-...``: its permissions, within its scope) and an API key
(``sk-tg-...``: inference only, never a management credential). A ``Principal`` is a caller
that proved one of the first two. A project outside its scope is answered exactly as one that
does not exist (``out_of_scope``), so an admin key learns nothing of other projects.

The key service checks admin keys against its own table (services/keys/access.py); metering
and billing against the states they follow from it (``shared/admin_key_follower.py``), with
``management_guard`` here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from fastapi import Header, Request
from pydantic import SecretStr

from shared import apikeys
from shared.errors import InsufficientPermissions, NotFound, Unauthorized
from shared.events import PERMISSIONS, AdminKeyState, AuditActor, Permission
from shared.http import bearer_token, token_matches

PROJECT_ID_PATH_MAX = 128  # the routes' own bound; a longer id is the route's 400
UNAUTHORIZED = (
    "Missing or incorrect credentials. Send the operator token or an admin key "
    "(sk-tg-admin-...) as 'Authorization: Bearer <token>'; API keys cannot manage anything."
)


@dataclass(frozen=True)
class Principal:
    """A caller's identity and rights: root, or one admin key's scope and permissions."""

    kind: Literal["root", "admin_key"]
    id: str
    hint: str | None
    organization: bool
    project_ids: frozenset[str]
    permissions: frozenset[str]

    @classmethod
    def of(cls, state: AdminKeyState) -> Principal:
        return cls(
            "admin_key",
            state.id,
            state.hint,
            state.organization,
            frozenset(state.project_ids),
            frozenset(state.permissions),
        )

    def require(self, permission: Permission) -> None:
        """InsufficientPermissions (403, naming it) when the caller lacks the permission."""
        if permission not in self.permissions:
            raise InsufficientPermissions(permission)

    def sees(self, project_id: str | None) -> bool:
        """True when the project is in scope (None, the organization: only for org scope)."""
        return self.organization or (project_id is not None and project_id in self.project_ids)

    @property
    def within(self) -> list[str] | None:
        """The projects in scope, or None for the whole organization (SQL filters take it)."""
        return None if self.organization else sorted(self.project_ids)

    @property
    def holding(self) -> list[str] | None:
        """The permissions held, or None for root (who holds every one, present and future)."""
        return None if self.kind == "root" else sorted(self.permissions)

    @property
    def actor(self) -> AuditActor:
        return AuditActor(type=self.kind, id=self.id, hint=self.hint)


ROOT = Principal("root", "root", None, True, frozenset(), frozenset(PERMISSIONS))


def out_of_scope(project_id: str) -> NotFound:
    """What a project outside the caller's scope gets: the body of one that does not exist."""
    return NotFound(f"No project found with id '{project_id}'.", param="project_id")


def in_scope(principal: Principal, request: Request) -> None:
    """Refuse, as missing, the project of the route's path when it is out of scope (before
    anything else is read: a bad query must not tell that a project exists)."""
    project_id = request.path_params.get("project_id")
    fits = isinstance(project_id, str) and len(project_id) <= PROJECT_ID_PATH_MAX
    if fits and not principal.sees(project_id):
        raise out_of_scope(str(project_id))


class AdminKeyLookup(Protocol):
    """What a guard asks of admin keys: the active state of a hash, or None."""

    async def active(self, key_hash: str) -> AdminKeyState | None: ...


def management_guard(
    operator_token: SecretStr, permission: Permission
) -> Callable[..., Awaitable[Principal]]:
    """A dependency for a route that needs permission: root for the operator token, the admin
    key's principal for an active admin key holding it (the app's ``admin_keys`` lookup), the
    project of the path in its scope; 401, 403 or 404 otherwise."""

    async def guard(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        token = bearer_token(authorization)
        if token_matches(token, operator_token):
            return ROOT
        if token is None or not apikeys.is_well_formed_admin(token):
            raise Unauthorized(UNAUTHORIZED, code="invalid_api_key")
        lookup: AdminKeyLookup = request.app.state.admin_keys
        state = await lookup.active(apikeys.hash_key(token))
        if state is None:
            raise Unauthorized(UNAUTHORIZED, code="invalid_api_key")
        principal = Principal.of(state)
        principal.require(permission)
        in_scope(principal, request)
        return principal

    return guard
