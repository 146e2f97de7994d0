"""Editing limits: a key's (rate limits, budget, models, endpoints) and its project's.

The edit forms hold the whole policy, so each save sends every field: a cleared field goes
as ``null`` and removes that limit; values left as they were change nothing (the key service
publishes nothing then). A refusal is shown beside the field it names, what was typed kept.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ApiProblem, ApiUnavailable
from services.console.keys_view import error_page, keys_list_url, policy_form
from services.console.policies import PolicyForm
from services.console.web import CheckedSessionDep, ConsoleDep

router = APIRouter()


@router.post("/projects/{project_id}/keys/{key_id}/limits", response_model=None)
async def edit_key_limits(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    key_id: str,
    revoked: Annotated[int, Form()] = 0,
    policy: Annotated[PolicyForm, Depends(policy_form)],
) -> Response:
    """Replace a key's limits and scopes with the form's (empty: no limit)."""
    try:
        key = await app.keys.update_key(project_id, key_id, policy.body(scopes=True))
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
            where=f"limits-{key_id}",
            form=policy,
        )
    session.flash(f"Limits of {key.get('name', key_id)} saved.")
    return RedirectResponse(keys_list_url(project_id, bool(revoked)), status_code=303)


@router.post("/projects/{project_id}/limits", response_model=None)
async def edit_project_limits(
    *,
    request: Request,
    app: ConsoleDep,
    session: CheckedSessionDep,
    project_id: str,
    revoked: Annotated[int, Form()] = 0,
    policy: Annotated[PolicyForm, Depends(policy_form)],
) -> Response:
    """Replace the project's rate limits and budget (for all its keys together)."""
    try:
        project = await app.keys.update_project(project_id, policy.body(scopes=False))
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
            where="project-limits",
            form=policy,
        )
    session.flash(f"Limits of project {project.get('name', project_id)} saved.")
    return RedirectResponse(keys_list_url(project_id, bool(revoked)), status_code=303)
