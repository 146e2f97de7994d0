"""The API Keys page: list, create, rename, set as default, rotate and delete keys.

A new or rotated secret is rendered into the answer to that POST only (never stored, never
put in a URL or a log); every other action redirects back to the list with a message.
An error from the key service is shown next to the form or row that caused it. What the
page shows, and how an action answers (``KeysAction``), is ``keys_view``; editing limits,
``limits_pages``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.clients import ApiProblem
from services.console.keys_view import (
    GRACE_CHOICES,
    KeysActionDep,
    KeysView,
    PolicyDep,
    keys_page_view,
)
from services.console.web import SessionDep, SignedInDep, allowed_form

router = APIRouter()

NameField = Annotated[str, Form()]
KEYS_WRITE = [allowed_form("keys:write")]


@router.get("/projects/{project_id}/keys")
async def keys_page(
    *,
    request: Request,
    app: SignedInDep,
    session: SessionDep,
    project_id: str,
    revoked: int = 0,
    dialog: str | None = None,
) -> HTMLResponse:
    """The project's keys; ``dialog`` opens one of the page's dialogs (works without script)."""
    view = KeysView(show_revoked=bool(revoked), open_dialog=dialog)
    return await keys_page_view(request, app, session, project_id, view)


@router.post("/projects/{project_id}/keys", response_model=None, dependencies=KEYS_WRITE)
async def create_key(page: KeysActionDep, policy: PolicyDep, name: NameField = "") -> Response:
    """Create a key, with its limits if any, and show its secret, this once."""
    body = policy.body(scopes=True)
    try:
        created = await page.app.keys.create_key(page.project_id, name.strip(), body)
    except ApiProblem as exc:
        return await page.refused(exc, "create", value=name, form=policy)
    return await page.show_secret(
        {"key": created["key"], "name": created.get("name"), "action": "created"}
    )


@router.post(
    "/projects/{project_id}/keys/{key_id}/rename", response_model=None, dependencies=KEYS_WRITE
)
async def rename_key(page: KeysActionDep, key_id: str, name: NameField = "") -> Response:
    """Rename a key."""
    try:
        key = await page.app.keys.rename_key(page.project_id, key_id, name.strip())
    except ApiProblem as exc:
        return await page.refused(exc, f"rename-{key_id}", value=name)
    return page.done(f"Key renamed to {key.get('name', name.strip())}.")


@router.post(
    "/projects/{project_id}/keys/{key_id}/default", response_model=None, dependencies=KEYS_WRITE
)
async def set_default(page: KeysActionDep, key_id: str) -> Response:
    """Make a key the project's default."""
    try:
        key = await page.app.keys.set_default(page.project_id, key_id)
    except ApiProblem as exc:
        return await page.refused(exc, f"default-{key_id}")
    return page.done(f"{key.get('name', 'The key')} is now the default key.")


@router.post(
    "/projects/{project_id}/keys/{key_id}/rotate", response_model=None, dependencies=KEYS_WRITE
)
async def rotate_key(
    page: KeysActionDep, key_id: str, grace: Annotated[int, Form()] = 0
) -> Response:
    """Give a key a new secret and show it, this once; the old one lasts the grace period."""
    where = f"rotate-{key_id}"
    if grace not in {choice for choice, _ in GRACE_CHOICES}:
        problem = ApiProblem("console", 400, "Choose one of the grace periods offered.")
        return await page.refused(problem, where)
    try:
        rotated = await page.app.keys.rotate_key(page.project_id, key_id, grace)
    except ApiProblem as exc:
        return await page.refused(exc, where)
    return await page.show_secret(
        {
            "key": rotated["key"],
            "name": rotated.get("name"),
            "action": "rotated",
            "grace": dict(GRACE_CHOICES)[grace] if grace else None,
        }
    )


@router.post(
    "/projects/{project_id}/keys/{key_id}/delete", response_model=None, dependencies=KEYS_WRITE
)
async def delete_key(page: KeysActionDep, key_id: str, name: NameField = "") -> Response:
    """Delete (revoke) a key: the gateway refuses it from then on."""
    try:
        await page.app.keys.delete_key(page.project_id, key_id)
    except ApiProblem as exc:
        return await page.refused(exc, f"delete-{key_id}")
    return page.done(f"Key {name or key_id} deleted. Requests with it are refused from now on.")
