"""Single sign-on through a reverse proxy (``TOLLGATE_CONSOLE_PROXY_AUTH``), against the real
key service: the proxy's admin key header signs its user in (audited) once per session, a
different user's key ends the session before, a revoked key is refused, a cross-site post
through the proxy still needs the session's CSRF token, and with the setting off the header
means nothing."""

from __future__ import annotations

import httpx

from services.console.session import COOKIE_NAME
from tests.console.conftest import Apis
from tests.console.helpers import (
    TOKEN,
    admin_key,
    audit_entries,
    console_browsers,
    console_settings,
    csrf_of,
    sign_in,
)

ORIGIN = {"Origin": "http://console.test"}
PROXIED = console_settings(proxy_auth=True)


def proxied(key: str) -> dict[str, str]:
    """What the proxy adds to each request of a user: that user's admin key."""
    return {"Authorization": f"Bearer {key}"}


def session_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(COOKIE_NAME + "="):
            return header.split(";")[0].split("=", 1)[1]
    return None


async def sign_ins(api: httpx.AsyncClient, actor: str) -> int:
    found = await audit_entries(api, ("event_types[]", "login.succeeded"), ("actor_ids[]", actor))
    return len(found)


async def test_the_proxys_admin_key_signs_its_user_in_once_per_session(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_browsers(PROXIED, keys_only.transports()) as browser,
    ):
        project = (await api.post("/v1/projects", json={"name": "Ours"})).json()["id"]
        alice = await admin_key(api, ["projects:read", "keys:read"], [project], name="alice")
        bob = await admin_key(api, ["projects:read", "keys:read", "keys:write"], [project], "bob")
        client = browser()

        first = await client.get("/projects", headers=proxied(alice["value"]))
        assert first.status_code == 200  # signed in on the way, no detour by the form
        assert "Signed in as <strong>alice</strong>" in first.text
        assert "(single sign-on)" in first.text
        alices = session_cookie(first)
        assert alices
        assert alice["value"] not in first.headers.get("set-cookie", "")
        again = await client.get(f"/projects/{project}/keys", headers=proxied(alice["value"]))
        assert again.status_code == 200
        assert session_cookie(again) is None  # the same session
        assert await sign_ins(api, alice["id"]) == 1

        # Another user behind the same browser: alice's session ends, bob's starts.
        switched = await client.get("/projects", headers=proxied(bob["value"]))
        assert "Signed in as <strong>bob</strong>" in switched.text
        assert session_cookie(switched) not in (None, alices)
        replay = browser()
        replay.cookies.set(COOKIE_NAME, alices)
        assert (await replay.get("/projects")).status_code == 303  # alice's session is gone

        # A session signed in by the form is not the proxy's either: it ends too.
        by_form = browser()
        assert (await sign_in(by_form)).status_code == 303
        form_cookie = by_form.cookies.get(COOKIE_NAME)
        taken = await by_form.get("/projects", headers=proxied(alice["value"]))
        assert "Signed in as <strong>alice</strong>" in taken.text
        assert session_cookie(taken) not in (None, form_cookie)
        assert await sign_ins(api, alice["id"]) == 2
        # Static files come with a page: they never start a session of their own.
        asset = await browser().get("/static/console.css", headers=proxied(bob["value"]))
        assert asset.status_code == 200
        assert session_cookie(asset) is None
        assert await sign_ins(api, bob["id"]) == 1


async def test_a_cross_site_post_through_the_proxy_needs_the_sessions_token(
    keys_only: Apis,
) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_browsers(PROXIED, keys_only.transports()) as browser,
    ):
        project = (await api.post("/v1/projects", json={"name": "Ours"})).json()["id"]
        writer = await admin_key(api, ["projects:read", "keys:read", "keys:write"], [project])
        victim = browser()
        page = await victim.get(f"/projects/{project}/keys", headers=proxied(writer["value"]))
        assert page.status_code == 200
        # Another site's form, sent by the victim's browser through the proxy: the proxy adds
        # the victim's key, but the SameSite=Strict cookie stays home, so the post starts a
        # session of its own, whose token neither the attacker's session's nor the victim's is.
        keys_url = f"/projects/{project}/keys"
        own = await browser().get(keys_url, headers=proxied(writer["value"]))
        attackers = csrf_of(own.text)
        for token in (attackers, csrf_of(page.text), "forged"):
            forged = await browser().post(
                f"/projects/{project}/keys",
                data={"name": "planted", "csrf_token": token},
                headers=proxied(writer["value"]),
            )
            assert forged.status_code == 403
            assert "nothing was changed" in forged.text
        assert (await api.get(f"/v1/projects/{project}/keys")).json()["data"] == []
        # The victim's own form, with its cookie and token, goes through.
        made = await victim.post(
            f"/projects/{project}/keys",
            data={"name": "mine", "csrf_token": csrf_of(page.text)},
            headers={**proxied(writer["value"]), **ORIGIN},
        )
        assert made.status_code == 200
        assert [
            k["name"] for k in (await api.get(f"/v1/projects/{project}/keys")).json()["data"]
        ] == ["mine"]


async def test_a_refused_key_signs_no_one_in(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_browsers(PROXIED, keys_only.transports()) as browser,
    ):
        gone = await admin_key(api, ["projects:read"], None, name="gone")
        await api.delete(f"/v1/organization/admin_api_keys/{gone['id']}")
        client = browser()
        refused = await client.get("/projects", headers=proxied(gone["value"]))
        assert refused.status_code == 401
        assert "not active" in refused.text
        assert session_cookie(refused) is None
        failed = await audit_entries(api, ("event_types[]", "login.failed"))
        assert len(failed) == 1
        # The operator token is never taken from the header: the form is its only way in.
        assert (await client.get("/projects", headers=proxied(TOKEN))).status_code == 303


async def test_without_the_setting_the_header_means_nothing(keys_only: Apis) -> None:
    async with (
        keys_only.client(keys_only.keys) as api,
        console_browsers(console_settings(), keys_only.transports()) as browser,
    ):
        member = await admin_key(api, ["projects:read"], None)
        response = await browser().get("/projects", headers=proxied(member["value"]))
        assert response.status_code == 303
        assert response.headers["location"].startswith("/signin")
        assert await audit_entries(api, ("event_types[]", "login.succeeded")) == []
