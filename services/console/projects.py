"""Projects: the switcher every project page carries, the projects page, creating one."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.clients import ApiProblem, ApiUnavailable
from services.console.session import Session
from services.console.web import CheckedSessionDep, Console, ConsoleDep, SessionDep, render

router = APIRouter()

# The key service's limit on project and key names (it checks them again on its side).
NAME_MAX_LENGTH = 64


async def project_context(app: Console, project_id: str) -> dict[str, Any]:
    """The switcher's projects and the current one (404 from the key service if unknown)."""
    projects = await app.keys.list_projects()
    current = next((p for p in projects if p.get("id") == project_id), None)
    if current is None:
        current = await app.keys.get_project(project_id)
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
    projects = await app.keys.list_projects()
    context = {
        "title": "Projects",
        "projects": projects,
        "project": None,
        "error": error,
        "name": name,
        "name_max": NAME_MAX_LENGTH,
        "open_dialog": "create-project" if error else dialog,
    }
    return render(request, app, "projects.html", context, session=session, status_code=status_code)


@router.get("/projects")
async def projects_page(
    request: Request, app: ConsoleDep, session: SessionDep, dialog: str | None = None
) -> HTMLResponse:
    """Every project, and a form to create one (``dialog`` opens it without script)."""
    return await _projects_page(request, app, session, dialog=dialog)


@router.post("/projects", response_model=None)
async def create_project(
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """Create a project and open its API keys."""
    try:
        project = await app.keys.create_project(name.strip())
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        return await _projects_page(
            request, app, session, error=exc.message, name=name, status_code=exc.status
        )
    session.flash(f"Project {project.get('name', '')} created.")
    return RedirectResponse(f"/projects/{project['id']}/keys", status_code=303)


@router.get("/projects/open", response_model=None)
async def open_project(_: SessionDep, project: str = "", page: str = "keys") -> Response:
    """Where the project switcher goes: the same page of another project."""
    target = page if page in ("keys", "usage") else "keys"
    if not project:
        return RedirectResponse("/projects", status_code=303)
    return RedirectResponse(f"/projects/{quote(project, safe='')}/{target}", status_code=303)


@router.get("/projects/{project_id}", response_model=None)
async def project_home(project_id: str, _: SessionDep) -> Response:
    """A project opens on its API keys."""
    return RedirectResponse(f"/projects/{project_id}/keys", status_code=303)
