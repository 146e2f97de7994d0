"""The API Keys page: list, create, rename, set as default, rotate and delete keys.

A new or rotated secret is rendered into the answer to that POST only (never stored, never
put in a URL or a log); every other action redirects back to the list with a message.
An error from the key service is shown next to the form or row that caused it. What the
page shows is ``keys_view``; editing limits, ``limits_pages``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.clients import ApiProblem, ApiUnavailable
from services.console.keys_view import (
    GRACE_CHOICES,
    KeysView,
    error_page,
    keys_list_url,
    keys_page_view,
    policy_form,
)
from services.console.policies import PolicyForm
from services.console.web import CheckedSessionDep, ConsoleDep, SessionDep

router = APIRouter()


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
    return await keys_page_view(request, app, session, project_id, view)


@router.post("/projects/{project_id}/keys", response_model=None)
async def create_key(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    name: Annotated[str, Form()] = "",
    revoked: Annotated[int, Form()] = 0,
    policy: Annotated[PolicyForm, Depends(policy_form)],
) -> Response:
    """Create a key, with its limits if any, and show its secret, this once."""
    try:
        created = await app.keys.create_key(project_id, name.strip(), policy.body(scopes=True))
    except ApiUnavailable:
        raise
    except ApiProblem as exc:
        return await error_page(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where="create",
            value=name,
            form=policy,
        )
    secret = {"key": created["key"], "name": created.get("name"), "action": "created"}
    view = KeysView(show_revoked=bool(revoked), open_dialog="secret", secret=secret)
    return await keys_page_view(request, app, session, project_id, view)


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
        return await error_page(
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
    return RedirectResponse(keys_list_url(project_id, bool(revoked)), status_code=303)


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
        return await error_page(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=f"default-{key_id}",
        )
    session.flash(f"{key.get('name', 'The key')} is now the default key.")
    return RedirectResponse(keys_list_url(project_id, bool(revoked)), status_code=303)


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
        return await error_page(
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
        return await error_page(
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
    return await keys_page_view(request, app, session, project_id, view)


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
        return await error_page(
            request,
            app,
            session,
            project_id,
            show_revoked=bool(revoked),
            exc=exc,
            where=f"delete-{key_id}",
        )
    session.flash(f"Key {name or key_id} deleted. Requests with it are refused from now on.")
    return RedirectResponse(keys_list_url(project_id, bool(revoked)), status_code=303)
