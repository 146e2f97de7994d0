"""Who is signed in and what the pages offer them, without a server: a principal from the
sign-in answer, the permissions each action needs, the pages' buttons and links for each,
the break-glass rule, proxy-bound sessions, and the Audit log page's filters and summaries."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.templating import Jinja2Templates
from pydantic import SecretStr

from services.console.access import ROOT, Actions, Principal, scoped_projects
from services.console.audit_entries import AuditFilters, actor_words, change_lines, change_summary
from services.console.clients import KeysApi
from services.console.formatting import install_filters
from services.console.proxy_auth import _with_cookie, binding, proxied_key
from services.console.session import COOKIE_NAME, SessionStore, key_digest
from services.console.sign_ins import SignInRefused, SignIns, SignInUnavailable, identify
from services.console.web import TEMPLATES
from shared.apikeys import generate, generate_admin
from shared.events import PERMISSIONS, Permission
from tests.console.helpers import TOKEN

pytestmark = pytest.mark.unit  # no server: `make test-unit`

# Each flag of Actions, and the one permission that turns it on (organization scope aside).
NEEDS: dict[str, Permission] = {
    "list_projects": "projects:read",
    "create_project": "projects:write",
    "edit_project": "projects:write",
    "read_keys": "keys:read",
    "write_keys": "keys:write",
    "usage": "usage:read",
    "costs": "costs:read",
    "audit": "audit:read",
}


def member(*permissions: str, organization: bool = False, name: str = "research") -> Principal:
    return Principal(
        "admin_key",
        "admkey_abc",
        name,
        "sk-...Wxyz",
        organization,
        frozenset() if organization else frozenset({"proj_ours"}),
        frozenset(permissions),
    )


def test_root_may_do_everything() -> None:
    actions = Actions.of(ROOT)
    assert all(getattr(actions, flag) for flag in NEEDS)
    assert ROOT.sees("proj_any")
    assert ROOT.label == "operator"


@pytest.mark.parametrize("permission", PERMISSIONS)
def test_each_permission_turns_on_its_actions_only(permission: Permission) -> None:
    actions = Actions.of(member(permission, organization=True))
    for flag, needed in NEEDS.items():
        assert getattr(actions, flag) == (needed == permission), flag


def test_creating_a_project_needs_organization_scope_too() -> None:
    assert not Actions.of(member("projects:write")).create_project
    assert Actions.of(member("projects:write")).edit_project
    assert Actions.of(member("projects:write", organization=True)).create_project


def test_a_project_scoped_principal_sees_its_projects_only() -> None:
    scoped = member("projects:read")
    assert scoped.sees("proj_ours")
    assert not scoped.sees("proj_theirs")
    listed = [{"id": "proj_ours", "name": "Ours"}, {"id": "proj_theirs", "name": "Theirs"}]
    assert scoped_projects(scoped, listed) == [{"id": "proj_ours", "name": "Ours"}]
    assert scoped_projects(ROOT, listed) == listed


def test_a_principal_from_the_sign_in_answer() -> None:
    answer = {
        "type": "admin_key",
        "id": "admkey_abc",
        "name": "research",
        "hint": "sk-...Wxyz",
        "organization": False,
        "project_ids": ["proj_ours"],
        "permissions": ["keys:read", "a:future_permission"],
    }
    principal = Principal.of(answer)
    assert principal == member("keys:read")
    assert principal.label == "research"
    assert not principal.can("keys:write")
    assert "a:future_permission" not in principal.permissions  # unknown: nothing shown for it
    assert Principal.of({"type": "root", "id": "root"}) is ROOT
    for broken in ({"type": "nobody"}, {"type": "admin_key"}, {**answer, "permissions": None}):
        with pytest.raises((ValueError, TypeError)):
            Principal.of(broken)


def _env() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    install_filters(templates.env)
    return templates


def _page(template: str, principal: Principal, **context: Any) -> str:
    values = {
        "title": "Page",
        "status": 200,
        "message": "",
        "signed_in": True,
        "principal": principal,
        "actions": Actions.of(principal),
        "single_sign_on": False,
        "csrf_field": "csrf_token",
        "csrf_token": "t",
        "flashes": [],
        "projects": [{"id": "proj_ours", "name": "Ours", "created_at": 1767312000}],
        "project": {"id": "proj_ours", "name": "Ours"},
        "nav": "keys",
        **context,
    }
    return _env().env.get_template(template).render(values)


def test_the_navigation_shows_only_the_pages_a_principal_may_open() -> None:
    everything = _page("error.html", ROOT)
    for link in ('href="/projects/proj_ours/keys"', 'href="/projects/proj_ours/usage"'):
        assert link in everything
    assert 'href="/audit"' in everything
    assert "Signed in as <strong>operator</strong>" in everything
    assert "Sign out" in everything

    reader = _page("error.html", member("keys:read"))
    assert 'href="/projects/proj_ours/keys"' in reader
    assert 'href="/projects/proj_ours/usage"' not in reader
    assert 'href="/audit"' not in reader
    assert "Signed in as <strong>research</strong> <code>sk-...Wxyz</code>" in reader

    auditor = _page("error.html", member("audit:read", "usage:read"), single_sign_on=True)
    assert 'href="/projects/proj_ours/keys"' not in auditor
    assert 'href="/projects/proj_ours/usage"' in auditor
    assert 'href="/audit"' in auditor
    assert "(single sign-on)" in auditor
    assert "Sign out" not in auditor  # the proxy would sign it in again at once


def test_the_projects_page_offers_create_project_only_with_the_right() -> None:
    listed = {"projects": [{"id": "proj_ours", "name": "Ours"}], "project": None, "nav": ""}
    # (A project shown by id has no creation time: the page must still render.)
    context = {**listed, "project_page": "keys", "name": "", "error": None, "name_max": 64}
    assert "Create project" in _page("projects.html", ROOT, **context)
    scoped_writer = member("projects:read", "projects:write")
    assert "Create project" not in _page("projects.html", scoped_writer, **context)
    unnamed = _page("projects.html", member("keys:read"), **{**context, "project_page": None})
    assert "does not hold <code>projects:read</code>" in unnamed
    assert 'href="/projects/proj_ours/' not in unnamed.split("<main")[1]


def test_a_client_not_bound_to_a_session_never_calls() -> None:
    unbound = KeysApi("key service", "http://keys")
    with pytest.raises(RuntimeError, match="no session"):
        unbound._headers()
    bound = unbound.bound(SecretStr("sk-tg-admin-x"))
    assert bound._headers()["Authorization"] == "Bearer sk-tg-admin-x"
    assert unbound._credential is None  # binding made a copy


REFUSED = {"error": {"message": "Not a credential.", "code": "invalid_credentials"}}


def _sign_ins(status: int, body: dict[str, Any] | None = None) -> tuple[SignIns, list[Any]]:
    """The sign-in client, answered by a stand-in for the key service: what was sent."""
    sent: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.headers["authorization"], json.loads(request.content)))
        return httpx.Response(status, json=body or {})

    client = SignIns("http://keys", SecretStr("internal"), transport=httpx.MockTransport(answer))
    return client, sent


async def test_every_sign_in_is_asked_of_the_key_service() -> None:
    principal = {"type": "admin_key", "id": "admkey_abc", "project_ids": [], "permissions": []}
    ok, sent = _sign_ins(200, {"object": "console_sign_in", "principal": principal})
    key = generate_admin()
    found = await identify(ok, SecretStr(TOKEN), key, ip="10.0.0.1", user_agent="UA" * 400)
    assert found.id == "admkey_abc"
    ((authorization, body),) = sent
    assert authorization == "Bearer internal"
    assert body == {"credential": key, "ip": "10.0.0.1", "user_agent": ("UA" * 400)[:512]}

    refused, _ = _sign_ins(401, REFUSED)
    with pytest.raises(SignInRefused):  # the operator token too, should the service say so
        await identify(refused, SecretStr(TOKEN), TOKEN, ip=None, user_agent=None)
    long, sent = _sign_ins(401, REFUSED)
    with pytest.raises(SignInRefused):
        await identify(long, SecretStr(TOKEN), "x" * 600, ip=None, user_agent=None)
    assert len(sent[0][1]["credential"]) == 512  # audited, cut to the endpoint's bound


async def test_a_refused_internal_token_is_an_outage_said_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = {
        "error": {"message": "Missing or incorrect internal token.", "code": "invalid_api_key"}
    }
    misconfigured, _ = _sign_ins(401, wrong)
    with pytest.raises(SignInUnavailable):
        await identify(misconfigured, SecretStr(TOKEN), generate_admin(), ip=None, user_agent=None)
    assert "TOLLGATE_CONSOLE_INTERNAL_TOKEN" in caplog.text
    # Break-glass still holds for the operator token.
    assert await identify(misconfigured, SecretStr(TOKEN), TOKEN, ip=None, user_agent=None) is ROOT


@pytest.mark.parametrize("status", [500, 503, 404, 403, 401])
async def test_the_operator_token_alone_signs_in_when_the_key_service_cannot_answer(
    status: int,
) -> None:
    down, _ = _sign_ins(status)
    assert await identify(down, SecretStr(TOKEN), TOKEN, ip=None, user_agent=None) is ROOT
    for other in (generate_admin(), generate(), TOKEN + "x", ""):
        with pytest.raises(SignInUnavailable):
            await identify(down, SecretStr(TOKEN), other, ip=None, user_agent=None)
    nonsense, _ = _sign_ins(200, {"principal": {"type": "admin_key"}})
    with pytest.raises(SignInUnavailable):
        await identify(nonsense, SecretStr(TOKEN), generate_admin(), ip=None, user_agent=None)


def test_a_proxy_session_is_bound_to_its_key() -> None:
    key, other = generate_admin(), generate_admin()
    assert proxied_key(f"Bearer {key}") == key
    assert proxied_key(f"bearer  {key} ") == key
    for not_one in (None, "", f"Basic {key}", f"Bearer {generate()}", f"Bearer {TOKEN}"):
        assert proxied_key(not_one) is None

    store = SessionStore(idle_s=60, max_s=300)
    _, bound = store.create(SecretStr(key), member(), bound_key=key_digest(key))
    _, by_form = store.create(SecretStr(key), member())
    assert binding(bound, key_digest(key)) == "keep"
    assert binding(bound, key_digest(other)) == "start"  # another user behind the proxy
    assert binding(by_form, key_digest(key)) == "start"  # the form's session is not the proxy's
    assert binding(None, key_digest(key)) == "start"
    assert bound.bound_key != key  # the digest, not the key
    assert key not in repr(bound)


def test_a_new_proxy_session_replaces_the_cookie_the_request_carried() -> None:
    headers = [
        (b"host", b"console"),
        (b"cookie", f"a=1; {COOKIE_NAME}=old; b=2".encode()),
    ]
    rewritten = dict(_with_cookie(headers, "new"))
    assert rewritten[b"cookie"] == f"a=1; b=2; {COOKIE_NAME}=new".encode()
    assert dict(_with_cookie([(b"host", b"console")], "new"))[b"cookie"] == (
        f"{COOKIE_NAME}=new".encode()
    )


def test_audit_filters_become_the_key_services_query() -> None:
    filters = AuditFilters(
        "api_key.created", "proj_ours", "admkey_abc", "key_1", "2026-01-02", "2026-01-03", "al_9"
    )
    assert filters.query == [
        ("limit", "50"),
        ("event_types[]", "api_key.created"),
        ("project_ids[]", "proj_ours"),
        ("actor_ids[]", "admkey_abc"),
        ("resource_ids[]", "key_1"),
        ("effective_at[gte]", "1767312000"),  # 2026-01-02 00:00:00 UTC
        ("effective_at[lte]", "1767484799"),  # 2026-01-03 23:59:59 UTC: the whole day
        ("after", "al_9"),
    ]
    assert not filters.errors
    assert filters.link(after="al_10") == {
        "type": "api_key.created",
        "project": "proj_ours",
        "actor": "admkey_abc",
        "resource": "key_1",
        "start": "2026-01-02",
        "end": "2026-01-03",
        "after": "al_10",
    }
    assert AuditFilters().query == [("limit", "50")]
    assert not AuditFilters(after="al_1").any


def test_audit_filters_that_cannot_be_read_are_left_out() -> None:
    bad = AuditFilters(type="key.stolen", start="last week", end="2026-13-01", actor="a" * 200)
    assert set(bad.errors) == {"type", "start", "end", "actor"}
    assert bad.query == [("limit", "50")]
    backwards = AuditFilters(start="2026-02-01", end="2026-01-01")
    assert "before the start" in backwards.errors["end"]
    assert backwards.query == [("limit", "50"), ("effective_at[gte]", "1769904000")]


def test_an_entrys_changes_in_a_few_words() -> None:
    renamed = {
        "before": {"name": "old", "hint": "sk-...a"},
        "after": {"name": "new", "hint": "sk-...a"},
    }
    assert change_lines(renamed) == ["name: old → new"]
    created = {
        "before": None,
        "after": {"name": "k", "budget": None, "rate_limits": {"requests_per_minute": 5}},
    }
    assert change_lines(created) == ["name: k", 'rate_limits: {"requests_per_minute": 5}']
    deleted = {"before": {"status": "active", "budget": None}, "after": None}
    assert change_lines(deleted) == ["status was active"]
    cleared = {"before": {"budget": {"limit_usd": "5"}}, "after": {"budget": None}}
    assert change_lines(cleared) == ['budget: {"limit_usd": "5"} → null']
    assert change_lines(None) == []
    assert change_lines("nonsense") == []
    many = {"before": None, "after": {f"f{i}": "x" * 100 for i in range(6)}}
    shown, full = change_summary(many)
    assert shown.endswith("; +2 more")
    assert "…" in shown
    assert len(shown) < 300
    assert json.loads(full) == many


def test_an_entrys_actor_in_words() -> None:
    assert actor_words({"type": "root", "id": "root", "hint": None}) == "operator"
    assert actor_words({"type": "admin_key", "id": "admkey_a", "hint": "sk-...Wxyz"}) == (
        "admkey_a (sk-...Wxyz)"
    )
    signed = {"type": "console_session", "id": "admkey_a", "hint": "sk-...Wxyz"}
    assert actor_words(signed) == "console sign-in as admkey_a (sk-...Wxyz)"
    failed = {"type": "console_session", "id": "anonymous", "hint": None}
    assert actor_words(failed) == "console sign-in, unknown"
    assert actor_words({"type": "console_session", "id": "root"}) == "console sign-in as operator"
    assert actor_words(None) == "unknown"
