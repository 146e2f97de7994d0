"""Who is signed in, and what the pages offer them.

A session signs in as root (the operator token: everything, every project) or as an admin
key (``sk-tg-admin-...``: its permissions, within its scope), as the key service's sign-in
endpoint answered. ``Actions`` turns the permissions into what the pages show: a button for an
action the principal lacks is left out, and the route refuses it too (``web.allowed``). The
APIs check every call again; the console's own checks only spare a round trip and keep
forbidden buttons off the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.events import PERMISSIONS, Permission

PrincipalKind = Literal["root", "admin_key"]


@dataclass(frozen=True)
class Principal:
    """Root, or one admin key: its name, hint, scope and permissions."""

    kind: PrincipalKind
    id: str
    name: str | None
    hint: str | None
    organization: bool
    project_ids: frozenset[str]
    permissions: frozenset[str]

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> Principal:
        """The principal of a sign-in answer's ``principal``; ValueError when malformed."""
        kind = answer.get("type")
        if kind == "root":
            return ROOT
        if kind != "admin_key":
            raise ValueError("a sign-in answer names neither root nor an admin key")
        ident, name, hint = answer.get("id"), answer.get("name"), answer.get("hint")
        projects, permissions = answer.get("project_ids"), answer.get("permissions")
        if not isinstance(ident, str) or not ident:
            raise ValueError("a sign-in answer without the admin key's id")
        if not isinstance(projects, list) or not isinstance(permissions, list):
            raise TypeError("a sign-in answer without the admin key's scope or permissions")
        return cls(
            "admin_key",
            ident,
            name if isinstance(name, str) else None,
            hint if isinstance(hint, str) else None,
            answer.get("organization") is True,
            frozenset(str(p) for p in projects),
            # Only the permissions the console knows: a new one shows nothing until it does.
            frozenset(str(p) for p in permissions) & frozenset(PERMISSIONS),
        )

    @property
    def root(self) -> bool:
        return self.kind == "root"

    def can(self, permission: Permission) -> bool:
        """True when the principal holds the permission (root holds every one)."""
        return self.root or permission in self.permissions

    def sees(self, project_id: str) -> bool:
        """True when the project is in scope (every project, for organization scope)."""
        return self.organization or project_id in self.project_ids

    @property
    def label(self) -> str:
        """Who this is, as the header says it: ``operator``, or the admin key's name."""
        return "operator" if self.root else (self.name or self.id)


ROOT = Principal("root", "root", None, None, True, frozenset(), frozenset(PERMISSIONS))


@dataclass(frozen=True)
class Actions:
    """What the pages offer a principal: each flag a set of buttons, links or figures."""

    list_projects: bool  # the projects' names (projects:read)
    create_project: bool  # Create project (projects:write, organization scope)
    edit_project: bool  # Edit project limits (projects:write)
    read_keys: bool  # the API keys list (keys:read)
    write_keys: bool  # Create, Rename, Limits, Rotate, Delete, Set as default (keys:write)
    usage: bool  # the Usage page and its link (usage:read)
    costs: bool  # cost figures and spend against budgets (costs:read)
    audit: bool  # the Audit log page and its link (audit:read)

    @classmethod
    def of(cls, principal: Principal) -> Actions:
        can = principal.can
        return cls(
            list_projects=can("projects:read"),
            create_project=can("projects:write") and principal.organization,
            edit_project=can("projects:write"),
            read_keys=can("keys:read"),
            write_keys=can("keys:write"),
            usage=can("usage:read"),
            costs=can("costs:read"),
            audit=can("audit:read"),
        )


def scoped_projects(principal: Principal, listed: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The projects of a list that are in the principal's scope (the key service lists only
    those already; this keeps a page right should it not)."""
    return [p for p in listed if isinstance(p.get("id"), str) and principal.sees(p["id"])]
