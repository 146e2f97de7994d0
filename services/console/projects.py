"""Projects: the switcher every project page carries, the projects page, creating one.

A session sees the projects in its scope only: the key service lists no other (and answers
404 for one), and the console refuses a project outside the scope before asking. Without
``projects:read`` the console cannot read project names: a project-scoped session still sees
its projects, by id.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.access import Actions, scoped_projects
from services.console.clients import ApiProblem, ApiUnavailable
from services.console.session import Session
from services.console.web import (
    CheckedSessionDep,
    Console,
    SessionDep,
    SignedInDep,
    allowed_form,
    render,
)

router = APIRouter()

# The key service's limit on project and key names (it checks them again on its side).
NAME_MAX_LENGTH = 64


def project_page(actions: Actions) -> str | None:
    """The page a project opens on for these actions: its keys, else its usage, else none."""
    if actions.read_keys or actions.write_keys:
        return "keys"
    return "usage" if actions.usage else None


def _unnamed(project_id: str) -> dict[str, Any]:
    return {"id": project_id, "name": project_id, "unnamed": True, "created_at": None}


async def visible_projects(app: Console) -> list[dict[str, Any]]:
    """The projects of the session's scope: as the key service lists them (``projects:read``),
    or else by id from the scope it signed in with."""
    principal = app.who
    if app.actions.list_projects:
        return scoped_projects(principal, await app.keys.list_projects())
    return [_unnamed(p) for p in sorted(principal.project_ids)]


async def project_context(app: Console, project_id: str) -> dict[str, Any]:
    """The switcher's projects and the current one (the console's 404 when out of scope, the
    key service's when unknown)."""
    app.check_scope(project_id)
    projects = await visible_projects(app)
    current = next((p for p in projects if p.get("id") == project_id), None)
    if current is None:
        if app.actions.list_projects:
            current = await app.keys.get_project(project_id)
        else:
            current = _unnamed(project_id)
        projects = [*projects, current]
    return {"projects": projects, "project": current, "name_max": NAME_MAX_LENGTH}


async def _projects_page(
    request: Request,
    app: Console,
    session: Session,
    *,
    error: str | None = None,
    name: str = "",
    dialog: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    projects = await visible_projects(app)
    context = {
        "title": "Projects",
        "projects": projects,
        "project": None,
        "project_page": project_page(app.actions),
        "error": error,
        "name": name,
        "name_max": NAME_MAX_LENGTH,
        "open_dialog": "create-project" if error else dialog,
    }
    return render(request, app, "projects.html", context, session=session, status_code=status_code)


@router.get("/projects")
async def projects_page(
    request: Request, app: SignedInDep, session: SessionDep, dialog: str | None = None
) -> HTMLResponse:
    """Every project in scope, and a form to create one (``dialog`` opens it without script)."""
    return await _projects_page(request, app, session, dialog=dialog)


@router.post("/projects", response_model=None, dependencies=[allowed_form("projects:write")])
async def create_project(
    request: Request,
    app: SignedInDep,
    session: CheckedSessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """Create a project and open its API keys."""
    try:
        project = await app.keys.create_project(name.strip())
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        if exc.status in (401, 403):  # not the form's fault: the refusal's own page
            raise
        return await _projects_page(
            request, app, session, error=exc.message, name=name, status_code=exc.status
        )
    session.flash(f"Project {project.get('name', '')} created.")
    return RedirectResponse(f"/projects/{project['id']}/keys", status_code=303)


@router.get("/projects/open", response_model=None)
async def open_project(app: SignedInDep, project: str = "", page: str = "keys") -> Response:
    """Where the project switcher goes: the same page of another project (from a page that is
    no project's, the page a project opens on)."""
    target = page if page in ("keys", "usage") else (project_page(app.actions) or "keys")
    if not project:
        return RedirectResponse("/projects", status_code=303)
    return RedirectResponse(f"/projects/{quote(project, safe='')}/{target}", status_code=303)


@router.get("/projects/{project_id}", response_model=None)
async def project_home(project_id: str, app: SignedInDep) -> Response:
    """A project opens on its API keys (or its usage, for who may not see keys)."""
    app.check_scope(project_id)
    page = project_page(app.actions) or "keys"
    return RedirectResponse(f"/projects/{project_id}/{page}", status_code=303)
