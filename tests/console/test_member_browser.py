"""The console walked in headless Chromium as a project member, on the whole running system.

An admin key of one project, holding projects:read, keys:read and usage:read, signs in: the
header names it, the other project is nowhere (switcher, projects page) and its URL is the
console's 404, no button that changes a key is on the page, and a form posted anyway from the
page itself (with the session's own valid CSRF token) is refused with no key created. Then an
auditor's key of the same project (audit:read) finds the Audit log in the sidebar, with that
project's changes and none of the other's, and filters it. Screenshots go to
``test-artifacts/console/``.
"""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Browser, Page, expect

from tests.console.browsing import shot
from tests.console.helpers import TOKEN, admin_key
from tests.console.served import System

FORBIDDEN_BUTTONS = ("Create API key", "Rename", "Rotate", "Delete", "Set as default", "Limits")


async def sign_in_with(page: Page, secret: str) -> None:
    await page.goto("/signin")
    await page.get_by_label("Operator token or admin key").fill(secret)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_project_member_walks_the_console(browser: Browser, running: System) -> None:
    async with httpx.AsyncClient(
        base_url=running.keys, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as api:
        ids = {}
        for name in ("Research", "Finance"):
            ids[name] = (await api.post("/v1/projects", json={"name": name})).json()["id"]
            made = await api.post(f"/v1/projects/{ids[name]}/keys", json={"name": f"{name}-app"})
            assert made.status_code == 201, made.text
        research, finance = ids["Research"], ids["Finance"]
        member = await admin_key(
            api, ["projects:read", "keys:read", "usage:read"], [research], "research-team"
        )
        auditor = await admin_key(
            api, ["projects:read", "keys:read", "audit:read"], [research], "research-auditor"
        )

        context = await browser.new_context(
            viewport={"width": 1280, "height": 860}, base_url=running.console
        )
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))

        await sign_in_with(page, member["value"])
        await expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
        assert f"/projects/{research}/keys" in page.url
        who = page.locator("#signed-in-as")
        await expect(who).to_contain_text("research-team")
        await expect(who).to_contain_text(member["redacted_value"])
        await expect(page.locator("tr", has_text="Research-app")).to_be_visible()
        for label in FORBIDDEN_BUTTONS:
            await expect(page.get_by_role("button", name=re.compile(label))).to_have_count(0)
        await expect(page.get_by_role("link", name="Audit log")).to_have_count(0)
        await expect(page.get_by_role("link", name="Usage")).to_be_visible()
        options = await page.locator("#project-switcher option").all_inner_texts()
        assert options == ["Research"]
        assert member["value"] not in await page.content()
        await shot(page, "20-member-keys")

        await page.get_by_role("link", name="All projects").click()
        await expect(page.get_by_role("link", name="Research")).to_be_visible()
        await expect(page.get_by_text("Finance")).to_have_count(0)
        await expect(page.get_by_role("button", name="Create project")).to_have_count(0)
        await shot(page, "21-member-projects")

        missing = await page.goto(f"/projects/{finance}/keys")
        assert missing is not None
        assert missing.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        await expect(page.get_by_text("Finance")).to_have_count(0)
        await shot(page, "22-member-other-project-404")

        # A form the page does not offer, posted from the page itself with the session's own
        # CSRF token (read from the sign-out form): the console refuses it, naming keys:write.
        await page.goto(f"/projects/{research}/keys")
        token = await page.locator("form.signout input[name=csrf_token]").input_value()
        async with page.expect_navigation():
            await page.evaluate(
                """([action, token]) => {
                    const form = document.createElement("form");
                    form.method = "post";
                    form.action = action;
                    for (const [name, value] of [["csrf_token", token], ["name", "planted"]]) {
                        const input = document.createElement("input");
                        input.type = "hidden";
                        input.name = name;
                        input.value = value;
                        form.appendChild(input);
                    }
                    document.body.appendChild(form);
                    form.submit();
                }""",
                [f"/projects/{research}/keys", token],
            )
        await expect(page.get_by_role("heading", name="Permission needed")).to_be_visible()
        await expect(page.get_by_role("alert")).to_contain_text("keys:write")
        await expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
        await shot(page, "23-member-forged-post-refused")
        keys = (await api.get(f"/v1/projects/{research}/keys")).json()["data"]
        assert [k["name"] for k in keys] == ["Research-app"]

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_text("You have signed out.")).to_be_visible()

        # The auditor: the Audit log in the sidebar, the member's sign-in and the changes.
        await sign_in_with(page, auditor["value"])
        await page.get_by_role("link", name="Audit log").click()
        await expect(page.get_by_role("heading", name="Audit log", exact=True)).to_be_visible()
        table = page.locator("#audit-entries")
        await expect(table).to_contain_text("api_key.created")
        await expect(table).to_contain_text("project.created")
        await expect(table).to_contain_text("Research-app")
        assert finance not in await page.content()  # the other project's entries: out of sight
        await shot(page, "24-audit-log")
        await page.get_by_label("Event type").select_option("api_key.created")
        await page.get_by_role("button", name="Apply").click()
        await page.wait_for_url(re.compile(r"type=api_key.created"))
        types = await page.locator("#audit-entries tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.type)"
        )
        assert types == ["api_key.created"]
        await shot(page, "25-audit-log-filtered")
        await context.close()
        assert not problems, problems
