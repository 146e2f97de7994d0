"""The console for project members, against the real key service: signing in with an admin
key (each attempt in the audit log), seeing only the projects in its scope, only the buttons
its permissions allow, every forbidden form refused by the console before the key service is
asked (and the key service's own refusals shown as such), a revoked key's session ended, and
the Audit log page."""

from __future__ import annotations

import re

import httpx

from shared.apikeys import generate_admin, hint
from tests.console.conftest import Apis
from tests.console.helpers import (
    admin_key,
    audit_entries,
    console_client,
    console_settings,
    csrf_of,
    sign_in,
)

ORIGIN = {"Origin": "http://console.test"}
# The key page's buttons (and their dialogs) of a key named Ours-key.
KEY_BUTTONS = (
    "Create API key",
    "Rename Ours-key",
    "Rotate Ours-key",
    "Delete Ours-key",
    "Set Ours-key as default",
    "Edit limits of Ours-key",
)


async def post(
    client: httpx.AsyncClient, path: str, data: dict[str, str], csrf: str
) -> httpx.Response:
    return await client.post(path, data={**data, "csrf_token": csrf}, headers=ORIGIN)


async def two_projects(api: httpx.AsyncClient) -> tuple[str, str]:
    """Projects "Ours" (with one key) and "Theirs", made by root."""
    ids = []
    for name in ("Ours", "Theirs"):
        answer = await api.post("/v1/projects", json={"name": name})
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
        made = await api.post(f"/v1/projects/{ids[-1]}/keys", json={"name": f"{name}-key"})
        assert made.status_code == 201, made.text
    return ids[0], ids[1]


async def test_an_admin_key_signs_in_and_every_attempt_is_audited(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        member = await admin_key(api, ["projects:read", "keys:read"], [ours], name="research")
        unknown = generate_admin()  # well formed, never issued

        refused = await sign_in(client, token=unknown)
        assert refused.status_code == 401
        assert "neither the operator token nor an active admin key" in refused.text
        assert unknown not in refused.text
        garbage = await sign_in(client, token="sk-tg-not-a-key-at-all-0123456789")
        assert garbage.status_code == 401

        signed = await sign_in(client, token=member["value"])
        assert signed.status_code == 303
        assert member["value"] not in signed.headers.get("set-cookie", "")
        page = await client.get(f"/projects/{ours}/keys")
        assert page.status_code == 200
        who = page.text.split('id="signed-in-as"')[1].split("</p>")[0]
        assert "research" in who
        assert member["redacted_value"] in who
        assert member["value"] not in page.text

        failed = await audit_entries(api, ("event_types[]", "login.failed"))
        assert len(failed) == 2
        assert all(e["actor"]["type"] == "console_session" for e in failed)
        assert all(e["ip"] == "127.0.0.1" for e in failed)
        succeeded = await audit_entries(api, ("event_types[]", "login.succeeded"))
        assert [e["actor"]["id"] for e in succeeded] == [member["id"]]
        assert succeeded[0]["user_agent"].startswith("python-httpx")
        # The sign-in's entry names the console request that caused it.
        assert succeeded[0]["request_id"] == signed.headers["x-request-id"]
        for entry in [*failed, *succeeded]:
            assert unknown not in str(entry)
            assert member["value"] not in str(entry)

    async with console_client(console_settings(), keys_only.transports()) as client:
        assert (await sign_in(client)).status_code == 303  # root, audited too
    async with keys_only.client(keys_only.keys) as api:
        roots = await audit_entries(
            api, ("event_types[]", "login.succeeded"), ("actor_ids[]", "root")
        )
        assert len(roots) == 1
        assert roots[0]["actor"]["type"] == "console_session"


async def test_a_project_member_sees_only_the_projects_in_scope(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, theirs = await two_projects(api)
        member = await admin_key(api, ["projects:read", "keys:read", "keys:write"], [ours])
        await sign_in(client, token=member["value"])

        home = await client.get("/")
        assert home.headers["location"] == f"/projects/{ours}/keys"
        listing = await client.get("/projects")
        assert "Ours" in listing.text
        assert "Theirs" not in listing.text
        assert theirs not in listing.text
        assert "Create project" not in listing.text  # projects:write, organization scope
        page = await client.get(f"/projects/{ours}/keys")
        assert f'<option value="{ours}" selected' in page.text
        assert theirs not in page.text
        assert "Ours-key" in page.text
        for path in (
            f"/projects/{theirs}/keys",
            f"/projects/{theirs}",
            "/projects/proj_doesnotexist/keys",
        ):
            refused = await client.get(path)
            assert refused.status_code == 404, path
            assert "Theirs" not in refused.text
        switched = await client.get("/projects/open", params={"project": ours, "page": "audit"})
        assert switched.headers["location"] == f"/projects/{ours}/keys"
        csrf = csrf_of(page.text)
        forged = await post(client, f"/projects/{theirs}/keys", {"name": "planted"}, csrf)
        assert forged.status_code == 404
        keys = (await api.get(f"/v1/projects/{theirs}/keys")).json()["data"]
        assert [k["name"] for k in keys] == ["Theirs-key"]


async def test_forbidden_buttons_are_absent_and_forged_posts_refused(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        key_id = (await api.get(f"/v1/projects/{ours}/keys")).json()["data"][0]["id"]
        reader = await admin_key(api, ["projects:read", "keys:read"], [ours], name="reader")
        await sign_in(client, token=reader["value"])
        page = await client.get(f"/projects/{ours}/keys")
        assert page.status_code == 200
        assert "Ours-key" in page.text
        for button in KEY_BUTTONS:
            assert button not in page.text, button
        assert "Edit project limits" not in page.text
        assert 'method="post" action="/projects/' not in page.text  # no form changes anything
        assert 'href="/audit"' not in page.text
        assert f'href="/projects/{ours}/usage"' not in page.text

        csrf = csrf_of(page.text)  # the session's own, valid token
        forged = {
            f"/projects/{ours}/keys": {"name": "planted"},
            f"/projects/{ours}/keys/{key_id}/rename": {"name": "renamed"},
            f"/projects/{ours}/keys/{key_id}/default": {},
            f"/projects/{ours}/keys/{key_id}/rotate": {"grace": "0"},
            f"/projects/{ours}/keys/{key_id}/delete": {},
            f"/projects/{ours}/keys/{key_id}/limits": {"rpm": "1"},
        }
        for path, data in forged.items():
            refused = await post(client, path, data, csrf)
            assert refused.status_code == 403, path
            assert "keys:write" in refused.text
            assert "Nothing was changed" in refused.text
        limits = await post(client, f"/projects/{ours}/limits", {"rpm": "1"}, csrf)
        assert limits.status_code == 403
        assert "projects:write" in limits.text
        created = await post(client, "/projects", {"name": "planted"}, csrf)
        assert created.status_code == 403
        assert "projects:write" in created.text
        for path in (f"/projects/{ours}/usage", "/audit"):
            assert (await client.get(path)).status_code == 403

        keys = (await api.get(f"/v1/projects/{ours}/keys")).json()["data"]
        assert [(k["name"], k["status"]) for k in keys] == [("Ours-key", "active")]
        assert keys[0]["rate_limits"] is None
        project = (await api.get(f"/v1/projects/{ours}")).json()
        assert project["rate_limits"] is None
        names = [p["name"] for p in (await api.get("/v1/projects")).json()["data"]]
        assert "planted" not in names
        changes = await audit_entries(api, ("actor_ids[]", reader["id"]))
        assert [e["type"] for e in changes] == ["login.succeeded"]  # and nothing else


async def test_the_key_services_own_refusal_is_shown_as_such(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        # projects:write within one project: the console offers no Create project (it needs
        # organization scope); a post anyway reaches the key service, whose 403 is the page.
        writer = await admin_key(api, ["projects:read", "projects:write"], [ours])
        await sign_in(client, token=writer["value"])
        listing = await client.get("/projects")
        assert "Create project" not in listing.text
        refused = await post(client, "/projects", {"name": "planted"}, csrf_of(listing.text))
        assert refused.status_code == 403
        assert "organization" in refused.text
        # projects:write without keys: the project's limits are its to edit, keys are not.
        page = await client.get(f"/projects/{ours}/keys")
        assert page.status_code == 403  # neither keys:read nor keys:write
        assert "keys:read" in page.text


async def test_a_revoked_admin_keys_session_ends(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        member = await admin_key(api, ["projects:read", "keys:read"], [ours])
        await sign_in(client, token=member["value"])
        assert (await client.get(f"/projects/{ours}/keys")).status_code == 200
        revoked = await api.delete(f"/v1/organization/admin_api_keys/{member['id']}")
        assert revoked.status_code == 200

        ended = await client.get(f"/projects/{ours}/keys")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/signin?expired=1"
        form = await client.get("/signin?expired=1")
        assert "no longer accepted" in form.text
        assert (await client.get("/projects")).status_code == 303  # signed out
        again = await sign_in(client, token=member["value"])
        assert again.status_code == 401


async def test_the_audit_log_page(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, theirs = await two_projects(api)
        key_id = (await api.get(f"/v1/projects/{ours}/keys")).json()["data"][0]["id"]
        for n in range(55):  # more than a page of entries in our project
            renamed = await api.patch(f"/v1/projects/{ours}/keys/{key_id}", json={"name": f"n{n}"})
            assert renamed.status_code == 200
        auditor = await admin_key(
            api, ["projects:read", "keys:read", "audit:read"], [ours], name="auditor"
        )
        await sign_in(client, token=auditor["value"])
        keys_page = await client.get(f"/projects/{ours}/keys")
        assert 'href="/audit"' in keys_page.text

        page = await client.get("/audit")
        assert page.status_code == 200
        ids = re.findall(r'data-entry-id="([^"]+)"', page.text)
        assert len(ids) == 50
        types = re.findall(r'data-type="([^"]+)"', page.text)
        assert types[0] == "api_key.updated"
        assert "name: n53 → n54" in page.text  # the newest change, compactly
        assert theirs not in page.text  # their project's entries are out of our sight
        older = re.search(r'href="/audit\?([^"]+)" rel="next">Older', page.text)
        assert older
        second = await client.get("/audit?" + older.group(1).replace("&amp;", "&"))
        more = re.findall(r'data-entry-id="([^"]+)"', second.text)
        assert more
        assert not set(more) & set(ids)
        assert "Newest" in second.text
        seen = {*re.findall(r'data-type="([^"]+)"', second.text)}
        assert "api_key.created" in seen
        assert "project.created" in seen

        created = await client.get("/audit", params={"type": "api_key.created"})
        assert set(re.findall(r'data-type="([^"]+)"', created.text)) == {"api_key.created"}
        assert len(re.findall(r'data-entry-id="', created.text)) == 1
        by_resource = await client.get("/audit", params={"resource": key_id, "type": ""})
        assert "Older" in by_resource.text  # 56 entries of that key
        login = await client.get("/audit", params={"type": "login.succeeded"})
        assert "data-entry-id" not in login.text  # a sign-in is the organization's, not ours
        dated = await client.get("/audit", params={"start": "2001-01-01", "end": "2001-01-02"})
        assert "Nothing matches these filters." in dated.text
        bad = await client.get("/audit", params={"start": "yesterday", "type": "nope"})
        assert bad.status_code == 200
        assert "A date is YYYY-MM-DD." in bad.text
        assert "is not an event type" in bad.text
        outside = await client.get("/audit", params={"project": theirs})
        assert outside.status_code == 404


async def test_an_organization_auditor_sees_sign_ins(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        await two_projects(api)
        auditor = await admin_key(api, ["audit:read"], None, name="org-auditor")
        assert (await sign_in(client, token=generate_admin())).status_code == 401
        await sign_in(client, token=auditor["value"])
        home = await client.get("/")
        assert home.headers["location"] == "/projects"  # no page of a project to open
        listing = await client.get("/projects")
        assert "projects:read" in listing.text  # why no project is named
        page = await client.get("/audit", params={"type": "login.failed"})
        assert "console sign-in, unknown" in page.text
        assert "unknown_admin_key" in page.text
        signed = await client.get("/audit", params={"type": "login.succeeded"})
        assert f"console sign-in as {auditor['id']} ({hint(auditor['value'])})" in signed.text


async def test_without_projects_read_the_projects_in_scope_show_by_id(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, theirs = await two_projects(api)
        member = await admin_key(api, ["keys:read"], [ours])
        await sign_in(client, token=member["value"])
        listing = await client.get("/projects")
        assert listing.status_code == 200
        assert f'href="/projects/{ours}/keys">{ours}</a>' in listing.text
        assert theirs not in listing.text
        page = await client.get(f"/projects/{ours}/keys")
        assert page.status_code == 200
        assert "Ours-key" in page.text
        assert "Project limits" not in page.text  # unknown without projects:read
        assert (await client.get(f"/projects/{theirs}/keys")).status_code == 404


async def test_usage_and_costs_follow_their_permissions(apis: Apis) -> None:
    """Metering and billing take the session's admin key (usage:read, costs:read)."""
    async with (
        apis.client(apis.keys) as api,
        console_client(console_settings(), apis.transports()) as client,
    ):
        ours, theirs = await two_projects(api)
        budget = {"budget": {"limit_usd": "25.00", "period": "month"}}
        assert (await api.patch(f"/v1/projects/{ours}", json=budget)).status_code == 200
        usage_only = await admin_key(api, ["projects:read", "keys:read", "usage:read"], [ours])
        await sign_in(client, token=usage_only["value"])
        page = await client.get(f"/projects/{ours}/usage")
        assert page.status_code == 200
        assert "could not be loaded" not in page.text  # metering took the admin key
        assert 'id="total-requests"' in page.text
        assert 'id="total-cost"' not in page.text
        assert "Cost per day" not in page.text
        assert 'id="no-costs"' in page.text
        assert "Project budget: $25.00 this month" in page.text  # the limit, not the spend
        keys_page = await client.get(f"/projects/{ours}/keys")
        assert "$25.00 this month" in keys_page.text
        assert "spend unavailable" not in keys_page.text  # billing was not asked
        assert (await client.get(f"/projects/{ours}/usage.csv?section=cost")).status_code == 403
        table = await client.get(f"/projects/{ours}/usage.csv?section=keys")
        assert table.status_code == 200
        assert "cost_usd" not in table.text
        assert (await client.get(f"/projects/{theirs}/usage")).status_code == 404

    async with (
        apis.client(apis.keys) as api,
        console_client(console_settings(), apis.transports()) as client,
    ):
        both = await admin_key(
            api, ["projects:read", "keys:read", "usage:read", "costs:read"], [ours], "finance"
        )
        await sign_in(client, token=both["value"])
        page = await client.get(f"/projects/{ours}/usage")
        assert page.status_code == 200
        assert "could not be loaded" not in page.text  # billing took the admin key too
        assert 'id="total-cost"' in page.text
        assert "Project budget: $0.00 of $25.00 this month" in page.text
        table = await client.get(f"/projects/{ours}/usage.csv?section=cost")
        assert table.status_code == 200


async def test_changes_made_through_the_console_name_the_browser(keys_only: Apis) -> None:
    """The audit entry of a change made in the console holds the browser's User-Agent (and
    its address, where the key service believes the console's X-Forwarded-For)."""
    browser_agent = "Mozilla/5.0 (X11; Linux x86_64) TollgateTest/1.0"
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        writer = await admin_key(api, ["projects:read", "keys:read", "keys:write"], [ours])
        client.headers["User-Agent"] = browser_agent
        await sign_in(client, token=writer["value"])
        page = await client.get(f"/projects/{ours}/keys")
        made = await post(
            client, f"/projects/{ours}/keys", {"name": "from-console"}, csrf_of(page.text)
        )
        assert made.status_code in (200, 303), made.text
        (entry,) = [
            e
            for e in await audit_entries(api, ("actor_ids[]", writer["id"]))
            if e["type"] == "api_key.created"
        ]
        assert entry["user_agent"] == browser_agent
        assert entry["actor"]["id"] == writer["id"]


async def test_the_audit_log_page_takes_hostile_filters_calmly(keys_only: Apis) -> None:
    """Every filter a browser sends is hostile: a clear answer each, never a 500."""
    async with (
        keys_only.client(keys_only.keys) as api,
        console_client(console_settings(), keys_only.transports()) as client,
    ):
        ours, _ = await two_projects(api)
        auditor = await admin_key(api, ["projects:read", "audit:read"], [ours], name="auditor")
        await sign_in(client, token=auditor["value"])
        hostile = [
            {"after": "audit_log-" + "0" * 32},  # a cursor that names no entry
            {"after": "'; DROP TABLE audit_logs; --"},
            {"resource": "key_\x00\x01\x7f"},
            {"actor": "a" * 5000},
            {"project": "../../etc/passwd"},
            {"type": "api_key.created\r\nSet-Cookie: x=1"},
            {"start": "9999-99-99", "end": "0000-00-00"},
            {"start": "2026-01-02", "end": "2026-01-01"},
        ]
        for params in hostile:
            answer = await client.get("/audit", params=params)
            assert answer.status_code in (200, 400, 404), (params, answer.status_code)
            assert "set-cookie" not in {k.lower() for k in answer.headers if k != "set-cookie"}
            assert "x=1" not in answer.headers.get("set-cookie", "")
