"""Editing limits: a key's (rate limits, budget, models, endpoints) and its project's.

The edit forms hold the whole policy, so each save sends every field: a cleared field goes
as ``null`` and removes that limit; values left as they were change nothing (the key service
publishes nothing then). A refusal is shown beside the field it names, what was typed kept.
A key's limits need ``keys:write``; the project's, ``projects:write`` (the key service's
``PATCH /v1/projects/{id}``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from services.console.clients import ApiProblem
from services.console.keys_view import KeysActionDep, PolicyDep
from services.console.web import allowed_form

router = APIRouter()


@router.post(
    "/projects/{project_id}/keys/{key_id}/limits",
    response_model=None,
    dependencies=[allowed_form("keys:write")],
)
async def edit_key_limits(page: KeysActionDep, key_id: str, policy: PolicyDep) -> Response:
    """Replace a key's limits and scopes with the form's (empty: no limit)."""
    try:
        key = await page.app.keys.update_key(page.project_id, key_id, policy.body(scopes=True))
    except ApiProblem as exc:
        return await page.refused(exc, f"limits-{key_id}", form=policy)
    return page.done(f"Limits of {key.get('name', key_id)} saved.")


@router.post(
    "/projects/{project_id}/limits",
    response_model=None,
    dependencies=[allowed_form("projects:write")],
)
async def edit_project_limits(page: KeysActionDep, policy: PolicyDep) -> Response:
    """Replace the project's rate limits and budget (for all its keys together)."""
    try:
        project = await page.app.keys.update_project(page.project_id, policy.body(scopes=False))
    except ApiProblem as exc:
        return await page.refused(exc, "project-limits", form=policy)
    return page.done(f"Limits of project {project.get('name', page.project_id)} saved.")
