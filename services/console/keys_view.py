"""What the API keys page shows in one rendering: the list, each key's limits and its spend
against its budget (billing's Costs API), the project's limits, and the dialogs' forms, with
an error from the key service beside the form and field that caused it, what was typed kept.
What the session may not do is left out: the list without ``keys:read``, every form and
button that changes a key without ``keys:write``, the project's limits form without
``projects:write``, spend without ``costs:read``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.console.budgets import PROJECT, read_budgets
from services.console.clients import ApiProblem, ApiUnavailable
from services.console.policies import (
    ENDPOINT_CHOICES,
    PERIOD_CHOICES,
    PolicyForm,
    error_field,
    model_choices,
)
from services.console.projects import project_context
from services.console.session import Session
from services.console.web import CheckedSessionDep, Console, PermissionMissing, SignedInDep, render

GRACE_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "None: the old secret stops working now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (604800, "7 days"),
)


ACTIONS = ("default", "rename", "rotate", "delete", "limits")
# Forms whose errors are not about one key's row.
PAGE_FORMS = ("create", "project-limits")


@dataclass
class KeysView:
    """What one rendering of the page shows besides the list."""

    show_revoked: bool = False
    open_dialog: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    # The policy fields of a form sent back with an error, as typed, and the field it is about.
    forms: dict[str, PolicyForm] = field(default_factory=dict)
    error_fields: dict[str, str] = field(default_factory=dict)
    secret: dict[str, Any] | None = None


async def policy_form(
    *,
    rpm: Annotated[str, Form()] = "",
    tpm: Annotated[str, Form()] = "",
    budget_usd: Annotated[str, Form()] = "",
    budget_period: Annotated[str, Form()] = "month",
    models: Annotated[list[str] | None, Form()] = None,
    endpoints: Annotated[list[str] | None, Form()] = None,
) -> PolicyForm:
    """The policy fields of a posted form."""
    return PolicyForm(
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        budget_period=budget_period,
        models=models or [],
        endpoints=endpoints or [],
    )


PolicyDep = Annotated[PolicyForm, Depends(policy_form)]


def keys_list_url(project_id: str, show_revoked: bool) -> str:
    return f"/projects/{project_id}/keys" + ("?revoked=1" if show_revoked else "")


async def keys_page_view(
    request: Request,
    app: Console,
    session: Session,
    project_id: str,
    view: KeysView,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    actions = app.actions
    if not actions.read_keys and not actions.write_keys:
        raise PermissionMissing("keys:read")
    context = await project_context(app, project_id)
    keys = []
    if actions.read_keys:
        keys = await app.keys.list_keys(project_id, include_revoked=view.show_revoked)
    # An error about a key the page no longer shows (deleted meanwhile) goes on top instead.
    shown = {f"{action}-{k['id']}" for k in keys for action in ACTIONS if k["status"] != "revoked"}
    stray = [msg for where, msg in view.errors.items() if where not in (*PAGE_FORMS, *shown)]
    project = context["project"]
    live = [k for k in keys if k["status"] != "revoked"]
    budgets = await read_budgets(
        app.costs,
        project_id,
        {PROJECT: project.get("budget"), **{k["id"]: k.get("budget") for k in live}},
        spend=actions.costs,
    )
    forms = {f"limits-{k['id']}": PolicyForm.of(k) for k in live}
    forms |= {"create": PolicyForm(), "project-limits": PolicyForm.of(project)}
    forms |= view.forms
    context.update(
        title="API keys",
        nav="keys",
        keys=keys,
        view=view,
        grace_choices=GRACE_CHOICES,
        list_url=keys_list_url(project_id, view.show_revoked),
        now=int(time.time()),
        stray_errors=stray,
        budgets=budgets,
        forms=forms,
        model_choices={where: model_choices(app.models, form) for where, form in forms.items()},
        period_choices=PERIOD_CHOICES,
        endpoint_choices=ENDPOINT_CHOICES,
    )
    return render(request, app, "keys.html", context, session=session, status_code=status_code)


async def error_page(
    request: Request,
    app: Console,
    session: Session,
    project_id: str,
    *,
    show_revoked: bool,
    exc: ApiProblem,
    where: str,
    value: str | None = None,
    form: PolicyForm | None = None,
) -> HTMLResponse:
    """The page again, with the key service's error beside the form (and field) that caused
    it, and what was typed kept."""
    view = KeysView(show_revoked=show_revoked, errors={where: exc.message})
    # The dialog of the form opens again (the create form's dialog is "create-key").
    view.open_dialog = {"create": "create-key"}.get(where, where) if where != "row" else None
    if value is not None:
        view.values[where] = value
    if form is not None:
        view.forms[where] = form
        view.error_fields[where] = error_field(exc.param) or "form"
    return await keys_page_view(request, app, session, project_id, view, status_code=exc.status)


@dataclass
class KeysAction:
    """A form post of the API keys page, and the three ways it is answered: the page again
    with a refusal beside its form, a redirect to the list with a message, or a secret shown
    once. Every action of the page (and of its limit dialogs) answers through these."""

    request: Request
    app: Console
    session: Session
    project_id: str
    show_revoked: bool

    async def refused(
        self,
        exc: ApiProblem,
        where: str,
        *,
        value: str | None = None,
        form: PolicyForm | None = None,
    ) -> HTMLResponse:
        """The page again with the refusal beside the form ``where``. What is not about the
        form goes on to its own page: a service that could not be reached (503), a credential
        refused (401), a permission missing (403), the project gone or out of scope (404)."""
        if isinstance(exc, ApiUnavailable) or exc.status in (401, 403):
            raise exc
        if exc.status == 404 and exc.param == "project_id":
            raise exc
        return await error_page(
            self.request,
            self.app,
            self.session,
            self.project_id,
            show_revoked=self.show_revoked,
            exc=exc,
            where=where,
            value=value,
            form=form,
        )

    def done(self, message: str) -> RedirectResponse:
        """Back to the list (303), with ``message`` shown there once."""
        self.session.flash(message)
        return RedirectResponse(keys_list_url(self.project_id, self.show_revoked), status_code=303)

    async def show_secret(self, secret: dict[str, Any]) -> HTMLResponse:
        """The list with the secret's dialog open: the only answer that carries a full key."""
        view = KeysView(show_revoked=self.show_revoked, open_dialog="secret", secret=secret)
        return await keys_page_view(self.request, self.app, self.session, self.project_id, view)


async def keys_action(
    request: Request,
    app: SignedInDep,
    session: CheckedSessionDep,
    project_id: str,
    revoked: Annotated[int, Form()] = 0,
) -> KeysAction:
    """The checked form post of a project's keys page (``revoked``: the list it came from);
    the console's 404 for a project out of the session's scope."""
    app.check_scope(project_id)
    return KeysAction(request, app, session, project_id, bool(revoked))


KeysActionDep = Annotated[KeysAction, Depends(keys_action)]
