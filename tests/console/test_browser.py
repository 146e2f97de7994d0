"""End to end in headless Chromium: the console, the gateway and the ledgers, all real.

Sign in (a wrong token first); create a project and a key; read the key from its dialog and
from the clipboard; call the gateway with it through the ``openai`` SDK; see the requests
and tokens on the Usage page, equal to what the SDK and the Usage API say; set a default;
rotate; delete, and see the gateway refuse the key; sign out, and reach no page.
A screenshot of each page goes to ``test-artifacts/console/``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import openai
from playwright.async_api import (
    Browser,
    BrowserContext,
    expect,
)

from tests.console.browsing import (
    CHAT,
    EMBED,
    create_key,
    gateway_status,
    row,
    shot,
)
from tests.console.helpers import TOKEN
from tests.console.served import System
from tests.polling import eventually


async def test_the_console_end_to_end(browser: Browser, running: System) -> None:
    context: BrowserContext = await browser.new_context(
        viewport={"width": 1280, "height": 860}, base_url=running.console
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=running.console)
    page = await context.new_page()
    # Offline by construction: every request stays on the console; no CSP or script error.
    requested: list[str] = []
    problems: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    # Signed out, every page leads to sign-in; a wrong token stays there.
    for path in ("/", "/projects", "/projects/proj_x/keys", "/projects/proj_x/usage"):
        await page.goto(path)
        await expect(page).to_have_url(re.compile(r"/signin"))
    await page.goto("/")
    await shot(page, "01-sign-in")
    await page.get_by_label("Operator token").fill("not-the-operator-token-at-all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#token-error")).to_contain_text(
        "neither the operator token nor an active admin key"
    )
    await shot(page, "02-sign-in-wrong-token")
    cookies = await context.cookies()
    assert not [c for c in cookies if c["name"] == "tollgate_console_session"]

    await page.get_by_label("Operator token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    session = next(c for c in await context.cookies() if c["name"] == "tollgate_console_session")
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # nothing a script can read
    await shot(page, "03-projects-empty")

    # A project, then a key, shown once: in the dialog and on the clipboard.
    await page.get_by_role("button", name="Create your first project").click()
    new_project = page.get_by_role("dialog", name="Create project")
    await new_project.get_by_label("Name").fill("Demo")
    await new_project.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    await expect(page.get_by_text("No API keys yet")).to_be_visible()
    await shot(page, "04-keys-empty")
    project = page.url.split("/projects/")[1].split("/")[0]

    secret = await create_key(page, "production-app")
    assert secret.startswith("sk-tg-")
    await (
        page.get_by_role("dialog", name="Save your key").get_by_role("button", name="Copy").click()
    )
    await expect(page.get_by_role("status").filter(has_text="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await shot(page, "05-key-created")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Done").click()
    await expect(page.get_by_role("dialog", name="Save your key")).to_have_count(0)
    assert secret not in await page.content()
    await expect(page.locator("code.hint", has_text="sk-..." + secret[-4:])).to_be_visible()

    # The gateway takes the key; the Usage page shows what the SDK was told.
    client = openai.AsyncOpenAI(base_url=running.gateway + "/v1", api_key=secret, max_retries=0)
    sent_in = sent_out = 0
    for prompt in ("Hello there", "What is a gateway?", "Count the tokens, please."):
        reply = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": prompt}], max_tokens=12
        )
        assert reply.usage is not None
        sent_in, sent_out = (
            sent_in + reply.usage.prompt_tokens,
            sent_out + reply.usage.completion_tokens,
        )
    vectors = await client.embeddings.create(model=EMBED, input=["one", "two three"])
    sent_in += vectors.usage.prompt_tokens
    await client.close()

    await page.get_by_role("link", name="Usage").click()
    await page.get_by_label("Period", exact=True).select_option("24h")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"period=24h"))
    usage_url = page.url

    async def shown_requests() -> str:
        await page.goto(usage_url)
        return await page.locator("#total-requests").get_attribute("data-value") or ""

    await eventually(shown_requests, until=lambda v: v == "4", timeout=30, what="4 requests")
    assert await page.locator("#total-input-tokens").get_attribute("data-value") == str(sent_in)
    assert await page.locator("#total-output-tokens").get_attribute("data-value") == str(sent_out)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        usage = (
            await api.get(
                f"{running.metering}/v1/projects/{project}/usage",
                params={
                    "start_time": int((now - timedelta(hours=23)).timestamp()),
                    "end_time": int((now + timedelta(hours=1)).timestamp()),
                    "bucket_width": "1h",
                    "limit": 24,
                },
            )
        ).json()
    results = [r for b in usage["data"] for r in b["results"]]
    assert sum(r["num_model_requests"] for r in results) == 4
    assert sum(r["input_tokens"] for r in results) == sent_in
    assert sum(r["output_tokens"] for r in results) == sent_out
    await expect(page.locator("#by-keys")).to_contain_text("production-app")
    await expect(page.locator("#by-models")).to_contain_text(EMBED)
    await page.locator("#total-cost:not([data-value='0'])").wait_for()
    await shot(page, "06-usage")

    # A second key; the first becomes the default, is rotated, then deleted.
    await page.get_by_role("link", name="API keys").click()
    second = await create_key(page, "development")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Done").click()
    await expect(page.get_by_role("dialog", name="Save your key")).to_have_count(0)
    assert second not in await page.content()
    # The project's first key became its default; the badge moves to the one set.
    prod, dev = row(page, "production-app"), row(page, "development")
    await expect(prod.locator(".badge.default")).to_be_visible()
    await dev.get_by_role("button", name="Set development as default").click()
    await expect(page.get_by_role("status")).to_contain_text("development is now the default key")
    await expect(dev.locator(".badge.default")).to_be_visible()
    await expect(prod.locator(".badge.default")).to_have_count(0)
    await expect(prod.locator("td[data-label='Last used']")).not_to_contain_text("Never")
    await expect(dev.locator("td[data-label='Last used']")).to_contain_text("Never")
    await page.reload()  # the message shown once is gone
    await expect(page.get_by_role("status")).to_have_count(0)
    await shot(page, "07-keys")

    # By keyboard: a dialog takes focus, Escape closes it, focus returns to its opener.
    opener = dev.get_by_role("button", name="Rename development")
    await opener.focus()
    await page.keyboard.press("Enter")
    rename = page.get_by_role("dialog", name="Rename development")
    await expect(rename.get_by_label("Name")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(rename).to_be_hidden()
    await expect(opener).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(rename.get_by_label("Name")).to_be_focused()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("dev-box")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("Key renamed to dev-box.")
    dev = row(page, "dev-box")
    await expect(dev.locator(".badge.default")).to_be_visible()

    await page.get_by_role("button", name="Rotate production-app").focus()
    await page.keyboard.press(" ")  # the space bar opens it, as on a button
    rotate = page.get_by_role("dialog", name="Rotate production-app")
    await expect(rotate).to_be_visible()
    await rotate.get_by_label("None: the old secret stops working now").check()
    await rotate.get_by_role("button", name="Rotate key").click()
    rotated = page.get_by_role("dialog", name="Save your key")
    await expect(rotated).to_contain_text("The old secret no longer works.")
    new_secret = await rotated.get_by_label("Secret key").input_value()
    assert new_secret != secret
    await shot(page, "08-key-rotated")
    async with page.expect_navigation():
        await page.keyboard.press("Escape")  # closing by keyboard leaves the hint only
    await expect(page.get_by_role("dialog", name="Save your key")).to_have_count(0)
    await expect(page.locator("code.hint", has_text="sk-..." + new_secret[-4:])).to_be_visible()
    assert new_secret not in await page.content()
    await eventually(
        lambda: gateway_status(running, secret), until=lambda s: s == 401, what="old secret refused"
    )
    assert await gateway_status(running, new_secret) == 200

    await page.get_by_role("button", name="Delete production-app").click()
    confirm = page.get_by_role("dialog", name="Delete production-app")
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    await shot(page, "09-delete-confirm")
    await confirm.get_by_role("button", name="Delete key").click()
    await expect(page.get_by_role("status")).to_contain_text("Key production-app deleted")
    await expect(row(page, "production-app")).to_have_count(0)
    await eventually(
        lambda: gateway_status(running, new_secret),
        until=lambda s: s == 401,
        timeout=10,
        what="deleted key refused",
    )
    assert await gateway_status(running, second) == 200
    await shot(page, "10-keys-after-delete")

    # Narrow screen: the same pages, one column.
    narrow = await context.new_page()
    await narrow.set_viewport_size({"width": 390, "height": 844})
    await narrow.goto(f"/projects/{project}/keys")
    await shot(narrow, "11-keys-narrow")
    await narrow.goto(f"/projects/{project}/usage?period=24h")
    await shot(narrow, "12-usage-narrow")
    await narrow.close()

    await page.goto("/projects")
    await expect(page.get_by_role("link", name="Demo")).to_be_visible()
    await shot(page, "13-projects")

    # Sign out: no page is reachable any more.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You have signed out.")).to_be_visible()
    for path in ("/projects", f"/projects/{project}/keys", f"/projects/{project}/usage"):
        await page.goto(path)
        await expect(page).to_have_url(re.compile(r"/signin"))
        await expect(
            page.get_by_role("heading", name="Sign in to the console", exact=True)
        ).to_be_visible()
    await context.close()
    assert requested
    assert all(url.startswith(running.console + "/") for url in requested), requested
    # The wrong token's 401 is the only error a page may log (the browser notes the status).
    assert all("401" in p for p in problems), problems


async def test_the_console_works_without_script(browser: Browser, running: System) -> None:
    context = await browser.new_context(java_script_enabled=False, base_url=running.console)
    page = await context.new_page()
    await page.goto("/")
    await page.get_by_label("Operator token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Create your first project").click()
    dialog = page.get_by_role("dialog", name="Create project")
    await dialog.get_by_label("Name").fill("Plain")
    await dialog.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()

    await page.get_by_role("button", name="Create your first API key").click()
    await expect(page).to_have_url(re.compile(r"dialog=create-key"))
    create = page.get_by_role("dialog", name="Create API key")
    await create.get_by_label("Name").fill("no-script")
    await create.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("dialog", name="Save your key")
    await expect(shown).to_be_visible()
    secret = await shown.get_by_label("Secret key").input_value()
    assert secret.startswith("sk-tg-")
    await shown.get_by_role("link", name="Done").click()
    await expect(page.get_by_role("dialog", name="Save your key")).to_have_count(0)
    assert secret not in await page.content()
    await expect(page.locator("code.hint", has_text="sk-..." + secret[-4:])).to_be_visible()
    assert await gateway_status(running, secret) == 200

    await page.get_by_role("link", name="Usage").click()
    await expect(page.locator("[data-custom-range]")).to_be_visible()  # no script hides it
    await page.get_by_label("Period", exact=True).select_option("30d")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(re.compile(r"period=30d"))
    await shot(page, "14-usage-without-script")
    await context.close()


async def test_limits_in_the_create_and_edit_dialogs(browser: Browser, running: System) -> None:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=running.console
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto("/")
    await page.get_by_label("Operator token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Create your first project").click()
    new_project = page.get_by_role("dialog", name="Create project")
    await new_project.get_by_label("Name").fill("Limits")
    await new_project.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()

    # Create: a name, then the limits and scopes behind their disclosure.
    await page.get_by_role("button", name="Create API key").first.click()
    create = page.get_by_role("dialog", name="Create API key")
    await create.get_by_label("Name").fill("batch-job")
    await create.get_by_text("Limits and scopes (optional)").click()
    await create.get_by_label("Requests per minute").fill("600")
    await create.get_by_label("Tokens per minute").fill("100000")
    await create.get_by_label("Budget (USD)").fill("25.00")
    await create.get_by_label("Budget period").select_option("month")
    await create.get_by_label(CHAT, exact=True).check()
    await create.get_by_label("/v1/chat/completions", exact=True).check()
    await create.get_by_label("/v1/models", exact=True).check()
    await shot(page, "15-create-key-with-limits")
    await create.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("dialog", name="Save your key")
    secret = await shown.get_by_label("Secret key").input_value()
    async with page.expect_navigation():
        await shown.get_by_role("link", name="Done").click()
    limits = row(page, "batch-job").locator("td[data-label='Limits']")
    await expect(limits).to_contain_text("600 rpm · 100k tpm")
    await expect(limits).to_contain_text("models: 1")
    await expect(limits).to_contain_text("endpoints: chat, models")
    await expect(limits).to_contain_text("$0.00 of $25.00 this month")

    # One request through the gateway: its cost reaches the key's budget line.
    assert await gateway_status(running, secret) == 200

    async def spent() -> str:
        await page.reload()
        return await limits.inner_text()

    text = await eventually(
        spent,
        until=lambda t: "$0.00 of" not in t and "of $25.00 this month" in t,
        timeout=30,
        what="the key's spend on the keys page",
    )
    assert "spend unavailable" not in text
    await shot(page, "16-keys-with-limits")

    # Edit: the dialog holds the key's policy; a bad amount comes back beside its field.
    await row(page, "batch-job").get_by_role("button", name="Edit limits of batch-job").click()
    edit = page.get_by_role("dialog", name="Edit limits of batch-job")
    await expect(edit.get_by_label("Requests per minute")).to_have_value("600")
    await expect(edit.get_by_label(CHAT, exact=True)).to_be_checked()
    await expect(edit.get_by_label("/v1/embeddings", exact=True)).not_to_be_checked()
    await edit.get_by_label("Tokens per minute").fill("")
    await edit.get_by_label("Budget (USD)").fill("five dollars")
    await edit.get_by_role("button", name="Save limits").click()
    edit = page.get_by_role("dialog", name="Edit limits of batch-job")
    amount = edit.get_by_label("Budget (USD)")
    await expect(amount).to_have_value("five dollars")  # what was typed stays
    await expect(amount).to_have_attribute("aria-invalid", "true")
    await expect(amount).to_be_focused()
    await expect(edit.get_by_role("alert")).to_contain_text("budget.limit_usd")
    await expect(edit.get_by_label("Tokens per minute")).to_have_value("")
    await shot(page, "17-edit-limits-refused")
    await amount.fill("5")
    await edit.get_by_label("Budget period").select_option("day")
    await edit.get_by_label(CHAT, exact=True).uncheck()
    await edit.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("status")).to_contain_text("Limits of batch-job saved.")
    limits = row(page, "batch-job").locator("td[data-label='Limits']")
    await expect(limits).to_contain_text("600 rpm")
    await expect(limits).not_to_contain_text("tpm")
    await expect(limits).not_to_contain_text("models:")
    await expect(limits).to_contain_text("of $5.00 today")

    # The project's own limits, for all its keys together.
    await page.get_by_role("button", name="Edit project limits").click()
    project = page.get_by_role("dialog", name="Project limits")
    await project.get_by_label("Requests per minute").fill("1000")
    await project.get_by_label("Budget (USD)").fill("500")
    await project.get_by_role("button", name="Save project limits").click()
    await expect(page.get_by_role("status")).to_contain_text("Limits of project Limits saved.")
    summary = page.locator("#project-limits-summary")
    await expect(summary).to_contain_text("1k rpm")
    await expect(summary).to_contain_text("of $500.00 this month")
    await shot(page, "18-project-limits")

    await page.get_by_role("link", name="Usage").click()
    await expect(page.locator("#budget-line")).to_contain_text("Project budget:")
    await expect(page.locator("#budget-line")).to_contain_text("of $500.00 this month")
    await shot(page, "19-usage-budget-line")
    await context.close()
    assert not problems, problems
