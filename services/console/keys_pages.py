"""The API Keys page: list, create, rename, set as default, rotate and delete keys.

A new or rotated secret is rendered into the answer to that POST only (never stored, never
put in a URL or a log); every other action redirects back to the list with a message.
An error from the key service is shown next to the form or row that caused it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.clients import ApiProblem, ApiUnavailable
from services.console.projects import project_context
from services.console.session import Session
from services.console.web import CheckedSessionDep, Console, ConsoleDep, SessionDep, render

router = APIRouter()

GRACE_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "None: the old secret stops working now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (604800, "7 days"),
)


ACTIONS = ("default", "rename", "rotate", "delete")


@dataclass
class KeysView:
    """What one rendering of the page shows besides the list."""

    show_revoked: bool = False
    open_dialog: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    secret: dict[str, Any] | None = None


def _list_url(project_id: str, show_revoked: bool) -> str:
    return f"/projects/{project_id}/keys" + ("?revoked=1" if show_revoked else "")


async def _keys_page(
    request: Request,
    app: Console,
    session: Session,
    project_id: str,
    view: KeysView,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    context = await project_context(app, project_id)
    keys = await app.keys.list_keys(project_id, include_revoked=view.show_revoked)
    # An error about a key the page no longer shows (deleted meanwhile) goes on top instead.
    shown = {f"{action}-{k['id']}" for k in keys for action in ACTIONS if k["status"] != "revoked"}
    stray = [msg for where, msg in view.errors.items() if where != "create" and where not in shown]
    context.update(
        title="API keys",
        nav="keys",
        keys=keys,
        view=view,
        grace_choices=GRACE_CHOICES,
        list_url=_list_url(project_id, view.show_revoked),
        now=int(time.time()),
        stray_errors=stray,
    )
    return render(request, app, "keys.html", context, session=session, status_code=status_code)


@router.get("/projects/{project_id}/keys")
async def keys_page(
    *,
    request: Request,
    app: ConsoleDep,
    session: SessionDep,
    project_id: str,
    revoked: int = 0,
    dialog: str | None = None,
) -> HTMLResponse:
    """The project's keys; ``dialog`` opens one of the page's dialogs (works without script)."""
    view = KeysView(show_revoked=bool(revoked), open_dialog=dialog)
    return await _keys_page(request, app, session, project_id, view)


async def _after(
    request: Request,
    app: Console,
    session: Session,
    project_id: str,
    *,
    show_revoked: bool,
    exc: ApiProblem,
    where: str,
    value: str | None = None,
) -> HTMLResponse:
    """The page again, with the key service's error beside the form that caused it."""
    view = KeysView(show_revoked=show_revoked, errors={where: exc.message})
    view.open_dialog = where if where != "row" else None
    if value is not None:
        view.values[where] = value
    return await _keys_page(request, app, session, project_id, view, status_code=exc.status)


@router.post("/projects/{project_id}/keys", response_model=None)
async def create_key(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    name: Annotated[str, Form()] = "",
    revoked: Annotated[int, Form()] = 0,
) -> Response:
    """Create a key and show its secret, this once."""
    try:
        created = await app.keys.create_key(project_id, name.strip())
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where="create",
            value=name,
        )
    secret = {"key": created["key"], "name": created.get("name"), "action": "created"}
    view = KeysView(show_revoked=bool(revoked), open_dialog="secret", secret=secret)
    return await _keys_page(request, app, session, project_id, view)


@router.post("/projects/{project_id}/keys/{key_id}/rename", response_model=None)
async def rename_key(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    key_id: str,
    name: Annotated[str, Form()] = "",
    revoked: Annotated[int, Form()] = 0,
) -> Response:
    """Rename a key."""
    try:
        key = await app.keys.rename_key(project_id, key_id, name.strip())
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        where = f"rename-{key_id}"
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=where,
            value=name,
        )
    session.flash(f"Key renamed to {key.get('name', name.strip())}.")
    return RedirectResponse(_list_url(project_id, bool(revoked)), status_code=303)


@router.post("/projects/{project_id}/keys/{key_id}/default", response_model=None)
async def set_default(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    key_id: str,
    revoked: Annotated[int, Form()] = 0,
) -> Response:
    """Make a key the project's default."""
    try:
        key = await app.keys.set_default(project_id, key_id)
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=f"default-{key_id}",
        )
    session.flash(f"{key.get('name', 'The key')} is now the default key.")
    return RedirectResponse(_list_url(project_id, bool(revoked)), status_code=303)


@router.post("/projects/{project_id}/keys/{key_id}/rotate", response_model=None)
async def rotate_key(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    key_id: str,
    grace: Annotated[int, Form()] = 0,
    revoked: Annotated[int, Form()] = 0,
) -> Response:
    """Give a key a new secret and show it, this once; the old one lasts the grace period."""
    if grace not in {choice for choice, _ in GRACE_CHOICES}:
        problem = ApiProblem("console", 400, "Choose one of the grace periods offered.")
        where = f"rotate-{key_id}"
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=problem,
            where=where,
        )
    try:
        rotated = await app.keys.rotate_key(project_id, key_id, grace)
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        where = f"rotate-{key_id}"
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=where,
        )
    secret = {
        "key": rotated["key"],
        "name": rotated.get("name"),
        "action": "rotated",
        "grace": dict(GRACE_CHOICES)[grace] if grace else None,
    }
    view = KeysView(show_revoked=bool(revoked), open_dialog="secret", secret=secret)
    return await _keys_page(request, app, session, project_id, view)


@router.post("/projects/{project_id}/keys/{key_id}/delete", response_model=None)
async def delete_key(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    key_id: str,
    name: Annotated[str, Form()] = "",
    revoked: Annotated[int, Form()] = 0,
) -> Response:
    """Delete (revoke) a key: the gateway refuses it from then on."""
    try:
        await app.keys.delete_key(project_id, key_id)
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        return await _after(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=f"delete-{key_id}",
        )
    session.flash(f"Key {name or key_id} deleted. Requests with it are refused from now on.")
    return RedirectResponse(_list_url(project_id, bool(revoked)), status_code=303)
