"""The Audit log page (``/audit``, ``audit:read``): the key service's audit log, newest first,
filtered and paged by its cursor.

A project-scoped session sees its projects' entries only (the key service filters); asking
for a project outside the scope is the console's 404, as everywhere.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.console.audit_entries import AuditFilters, actor_words, change_summary
from services.console.projects import visible_projects
from services.console.web import SessionDep, SignedInDep, allowed, render
from shared.events import AUDIT_EVENT_TYPES

router = APIRouter()


@router.get("/audit", dependencies=[allowed("audit:read")])
async def audit_page(
    *,
    request: Request,
    app: SignedInDep,
    session: SessionDep,
    type: str = "",
    project: str = "",
    actor: str = "",
    resource: str = "",
    start: str = "",
    end: str = "",
    after: str = "",
) -> HTMLResponse:
    """One page of audit entries with the filters given; ``after`` pages to older ones."""
    filters = AuditFilters(type, project, actor, resource, start, end, after)
    if filters.project:
        app.check_scope(filters.project)
    projects = await visible_projects(app)
    answer = await app.keys.audit_logs(filters.query)
    entries = list(answer.get("data") or [])
    names = {p["id"]: p.get("name") for p in projects}
    rows = [
        {
            "entry": entry,
            "actor": actor_words(entry.get("actor")),
            "changes": change_summary(entry.get("changes")),
            "project_name": names.get(entry.get("project_id") or ""),
        }
        for entry in entries
    ]
    older = None
    if answer.get("has_more") and answer.get("last_id"):
        older = filters.link(after=str(answer["last_id"]))
    context = {
        "title": "Audit log",
        "nav": "audit",
        "projects": projects,
        "project": None,
        "filters": filters,
        "event_types": AUDIT_EVENT_TYPES,
        "rows": rows,
        "older": older,
        "newest": filters.link() if filters.after else None,
    }
    return render(request, app, "audit.html", context, session=session)
