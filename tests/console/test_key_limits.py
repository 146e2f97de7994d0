"""Key and project limits through the console's forms, against the real key service; each
key's spend against its budget and the usage page's budget line, from the real billing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from deploy.stack import Endpoints
from tests.console.conftest import Apis
from tests.console.helpers import console_client, console_settings, csrf_of, sign_in
from tests.console.test_keys_pages import ORIGIN, new_project, post, secret_of
from tests.console.test_usage_page import CHAT, EMBED, event, produce
from tests.polling import eventually

CATALOGUE = Path(__file__).resolve().parents[2] / "deploy" / "models.yaml"
# Billing's port refuses at once: pages with budgets must still render.
NO_BILLING = {"billing_url": "http://127.0.0.1:9", "api_timeout_s": 2}


def row(html: str, key_id: str) -> str:
    return html.split(f'data-key-id="{key_id}"')[1].split("</tr>", maxsplit=1)[0]


def dialog(html: str, dialog_id: str) -> str:
    return html.split(f'<dialog id="{dialog_id}"')[1].split("</dialog>", maxsplit=1)[0]


def text(html: str) -> str:
    """The page's text, tags dropped and spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def fields(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    got = (await api.get(path)).json()
    names = ("rate_limits", "budget", "allowed_models", "allowed_endpoints")
    return {name: got.get(name) for name in names}


async def send(
    client: httpx.AsyncClient, path: str, data: dict[str, str | list[str]], csrf: str
) -> httpx.Response:
    """A form post as the browser sends it (checkboxes: the field repeated)."""
    return await client.post(path, data={**data, "csrf_token": csrf}, headers=ORIGIN)


LIMITED: dict[str, str | list[str]] = {
    "name": "batch-job",
    "rpm": "600",
    "tpm": "100,000",
    "budget_usd": "25.00",
    "budget_period": "month",
    "models": CHAT,
    "endpoints": ["chat.completions", "models"],
}


async def test_a_key_is_created_with_limits_then_edited_and_cleared(keys_only: Apis) -> None:
    settings = console_settings(catalogue_path=CATALOGUE, **NO_BILLING)
    async with (
        console_client(settings, keys_only.transports()) as client,
        keys_only.client(keys_only.keys) as api,
    ):
        await sign_in(client)
        project = await new_project(client, "Limits")
        keys_url = f"/projects/{project}/keys"
        page = (await client.get(keys_url)).text
        create = dialog(page, "create-key")
        assert f'name="models" value="{CHAT}"' in create  # choices from the catalogue
        assert f'name="models" value="{EMBED}"' in create
        assert 'name="endpoints" value="chat.completions"' in create
        csrf = csrf_of(page)

        created = await send(client, keys_url, LIMITED, csrf)
        assert created.status_code == 200
        assert secret_of(created.text).startswith("sk-tg-")
        key_id = (await api.get(f"/v1/projects/{project}/keys")).json()["data"][0]["id"]
        key_path = f"/v1/projects/{project}/keys/{key_id}"
        assert await fields(api, key_path) == {
            "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 100_000},
            "budget": {"limit_usd": "25.00", "period": "month"},
            "allowed_models": [CHAT],
            "allowed_endpoints": ["chat.completions", "models"],
        }
        listed = text(row((await client.get(keys_url)).text, key_id))
        assert "600 rpm · 100k tpm" in listed
        assert "models: 1" in listed
        assert "endpoints: chat, models" in listed
        assert "$25.00 this month · spend unavailable" in listed  # billing is down here

        # The edit dialog holds the key's policy; a save replaces it whole.
        edit = dialog((await client.get(keys_url)).text, f"limits-{key_id}")
        assert 'name="rpm" type="text" inputmode="numeric" autocomplete="off" value="600"' in edit
        assert 'value="25.00"' in edit
        assert f'value="{CHAT}" checked' in edit
        assert 'value="models" checked' in edit
        assert 'value="embeddings">' in edit  # not checked
        limits_url = f"{keys_url}/{key_id}/limits"
        changed = await post(
            client,
            limits_url,
            {"rpm": "60", "tpm": "", "budget_usd": "5", "budget_period": "day"},
            csrf,
        )
        assert changed.status_code == 303
        assert await fields(api, key_path) == {
            "rate_limits": {"requests_per_minute": 60, "tokens_per_minute": None},
            "budget": {"limit_usd": "5", "period": "day"},
            "allowed_models": None,  # unchecked: every model
            "allowed_endpoints": None,
        }
        page = (await client.get(keys_url)).text
        assert "Limits of batch-job saved." in page
        listed = text(row(page, key_id))
        assert "60 rpm" in listed
        assert "tpm" not in listed
        assert "models:" not in listed
        assert "$5.00 today" in listed

        scoped = await post(
            client, limits_url, {"endpoints": "embeddings", "models": EMBED, "rpm": "60"}, csrf
        )
        assert scoped.status_code == 303
        assert await fields(api, key_path) == {
            "rate_limits": {"requests_per_minute": 60, "tokens_per_minute": None},
            "budget": None,  # the amount left empty: no budget
            "allowed_models": [EMBED],
            "allowed_endpoints": ["embeddings"],
        }
        cleared = await post(client, limits_url, {}, csrf)
        assert cleared.status_code == 303
        assert await fields(api, key_path) == dict.fromkeys(
            ("rate_limits", "budget", "allowed_models", "allowed_endpoints")
        )
        assert "None" in text(row((await client.get(keys_url)).text, key_id))


async def test_a_bad_value_is_shown_beside_its_field_with_what_was_typed(
    keys_only: Apis,
) -> None:
    settings = console_settings(catalogue_path=CATALOGUE, **NO_BILLING)
    async with (
        console_client(settings, keys_only.transports()) as client,
        keys_only.client(keys_only.keys) as api,
    ):
        await sign_in(client)
        project = await new_project(client, "Bad values")
        keys_url = f"/projects/{project}/keys"
        csrf = csrf_of((await client.get(keys_url)).text)

        zero = await send(client, keys_url, {**LIMITED, "name": "kept-name", "rpm": "0"}, csrf)
        assert zero.status_code == 400
        create = dialog(zero.text, "create-key")
        assert "open data-open-modal" in zero.text.split('<dialog id="create-key"')[1][:200]
        error = create.split('id="create-rpm-error"')[1].split("</p>")[0]
        assert "rate_limits.requests_per_minute" in error  # the key service's message
        assert 'id="create-rpm" name="rpm"' in create
        assert 'value="0" placeholder="no limit" aria-invalid="true"' in create
        assert 'value="kept-name"' in create  # everything typed stays
        assert 'value="25.00"' in create
        assert f'value="{CHAT}" checked' in create
        assert 'value="chat.completions" checked' in create
        assert 'id="key-name-error"' not in create  # the name was fine
        assert (await api.get(f"/v1/projects/{project}/keys")).json()["data"] == []

        made = await post(client, keys_url, {"name": "plain"}, csrf)
        assert made.status_code == 200
        key_id = (await api.get(f"/v1/projects/{project}/keys")).json()["data"][0]["id"]
        limits_url = f"{keys_url}/{key_id}/limits"
        bad_amount = await post(client, limits_url, {"budget_usd": "12.5.0", "tpm": "99"}, csrf)
        assert bad_amount.status_code == 400
        edit = dialog(bad_amount.text, f"limits-{key_id}")
        assert "budget.limit_usd" in edit.split(f'id="limits-{key_id}-budget-error"')[1]
        assert 'value="12.5.0"' in edit
        assert 'value="99"' in edit
        unknown = await post(client, limits_url, {"models": "gpt-9"}, csrf)
        assert unknown.status_code == 400
        edit = dialog(unknown.text, f"limits-{key_id}")
        assert (
            "The model &#39;gpt-9&#39; is not in the catalogue"
            in edit.split(f'id="limits-{key_id}-models-error"')[1]
        )
        assert 'value="gpt-9" checked' in edit  # kept, so it can be unchecked
        unchanged = await api.get(f"/v1/projects/{project}/keys/{key_id}")
        assert unchanged.json()["budget"] is None


async def test_project_limits_are_set_shown_refused_and_cleared(keys_only: Apis) -> None:
    settings = console_settings(catalogue_path=CATALOGUE, **NO_BILLING)
    async with (
        console_client(settings, keys_only.transports()) as client,
        keys_only.client(keys_only.keys) as api,
    ):
        await sign_in(client)
        project = await new_project(client, "Shared")
        keys_url = f"/projects/{project}/keys"
        page = (await client.get(keys_url)).text
        assert "No project limits." in page
        assert 'name="models"' not in dialog(page, "project-limits")  # keys' scopes only
        csrf = csrf_of(page)
        limits_url = f"/projects/{project}/limits"

        saved = await post(
            client,
            limits_url,
            {"rpm": "1000", "tpm": "2500000", "budget_usd": "500", "budget_period": "month"},
            csrf,
        )
        assert saved.status_code == 303
        got = (await api.get(f"/v1/projects/{project}")).json()
        assert got["rate_limits"] == {"requests_per_minute": 1000, "tokens_per_minute": 2_500_000}
        assert got["budget"] == {"limit_usd": "500", "period": "month"}
        page = (await client.get(keys_url)).text
        assert "Limits of project Shared saved." in page
        summary = text(page.split('id="project-limits-summary"')[1].split("</section>")[0])
        assert "1k rpm · 2.5M tpm" in summary
        assert "Budget: $500.00 this month · spend unavailable" in summary
        assert 'value="2500000"' in dialog(page, "project-limits")

        refused = await post(
            client, limits_url, {"budget_usd": "10", "budget_period": "week"}, csrf
        )
        assert refused.status_code == 400
        edit = dialog(refused.text, "project-limits")
        assert "budget.period" in edit.split('id="project-limits-period-error"')[1]
        assert 'value="10"' in edit
        kept = (await api.get(f"/v1/projects/{project}")).json()
        assert kept["budget"] == {"limit_usd": "500", "period": "month"}

        cleared = await post(client, limits_url, {"rpm": "1000"}, csrf)
        assert cleared.status_code == 303
        got = (await api.get(f"/v1/projects/{project}")).json()
        assert got["rate_limits"] == {"requests_per_minute": 1000, "tokens_per_minute": None}
        assert got["budget"] is None


async def test_spend_against_budgets_on_the_keys_and_usage_pages(
    apis: Apis, endpoints: Endpoints, topic_prefix: str
) -> None:
    settings = console_settings(catalogue_path=CATALOGUE)
    async with (
        console_client(settings, apis.transports()) as client,
        apis.client(apis.keys) as keys,
    ):
        await sign_in(client)
        project = (await keys.post("/v1/projects", json={"name": "Spend"})).json()["id"]
        monthly = {"name": "monthly", "budget": {"limit_usd": "1.00", "period": "month"}}
        ever = {"name": "ever", "budget": {"limit_usd": "0.10", "period": "total"}}
        a = (await keys.post(f"/v1/projects/{project}/keys", json=monthly)).json()
        b = (await keys.post(f"/v1/projects/{project}/keys", json=ever)).json()
        budget = {"limit_usd": "0.50", "period": "day"}
        await keys.patch(f"/v1/projects/{project}", json={"budget": budget})
        keys_url, usage_url = f"/projects/{project}/keys", f"/projects/{project}/usage"

        before = (await client.get(keys_url)).text
        assert "$0.00 of $1.00 this month" in text(row(before, a["id"]))

        now = datetime.now(UTC)
        # 200k input and 50k output tokens of the chat model: $0.03 + $0.03, exactly.
        await produce(
            endpoints,
            topic_prefix,
            [
                event(project, a["id"], CHAT, (200_000, 50_000), now - timedelta(minutes=1)),
                event(project, b["id"], CHAT, (100_000, 0), now - timedelta(minutes=1)),
                # Two months ago (priced: prices start 2026-01-01): in b's total only.
                event(project, b["id"], CHAT, (0, 200_000), now - timedelta(days=60)),
            ],
        )

        async def keys_page() -> str:
            return text((await client.get(keys_url)).text)

        page = await eventually(
            keys_page,
            until=lambda t: "$0.06 of $1.00 this month" in t and "$0.14 of $0.10 in total" in t,
            timeout=30,
            what="each key's spend against its budget",
        )
        html = (await client.get(keys_url)).text
        assert "$0.06 of $1.00 this month" in text(row(html, a["id"]))
        assert re.search(r'<meter min="0" max="1.00" value="0.060*"', row(html, a["id"]))
        # b: $0.015 now and $0.12 long ago, past its budget (the meter full, the text marked).
        assert "$0.14 of $0.10 in total" in text(row(html, b["id"]))
        assert 'class="budget over"' in row(html, b["id"])
        assert re.search(r'<meter min="0" max="0.10" value="0.10"', row(html, b["id"]))
        # The project today: $0.06 + $0.015 = $0.075, shown half-up; the old event is not today's.
        assert "Budget: $0.08 of $0.50 today" in page
        assert "spend unavailable" not in page

        usage = (await client.get(usage_url, params={"period": "7d"})).text
        line = text(usage.split('id="budget-line"')[1].split("</section>")[0])
        assert "Project budget: $0.08 of $0.50 today" in line
        assert "Budget of" not in line  # no key selected
        assert 'class="limit-line"' in usage  # a daily budget is a line on cost per day
        assert "Budget $0.50 a day" in usage
        only_a = (await client.get(usage_url, params={"period": "7d", "key": a["id"]})).text
        line = text(only_a.split('id="budget-line"')[1].split("</section>")[0])
        assert "Project budget: $0.08 of $0.50 today" in line
        assert "Budget of monthly: $0.06 of $1.00 this month" in line
        assert 'class="limit-line"' not in only_a  # a monthly budget is not a daily line

        await keys.patch(f"/v1/projects/{project}", json={"budget": None})
        bare = (await client.get(usage_url)).text
        assert 'id="budget-line"' not in bare


async def test_the_keys_page_renders_when_billing_is_down(apis: Apis) -> None:
    transports = apis.transports()
    del transports["billing"]
    settings = console_settings(**NO_BILLING)
    async with (
        console_client(settings, transports) as client,
        apis.client(apis.keys) as keys,
    ):
        await sign_in(client)
        project = (await keys.post("/v1/projects", json={"name": "Down"})).json()["id"]
        body = {"name": "k", "budget": {"limit_usd": "3", "period": "day"}}
        key = (await keys.post(f"/v1/projects/{project}/keys", json=body)).json()
        page = await client.get(f"/projects/{project}/keys")
        assert page.status_code == 200
        assert "$3.00 today · spend unavailable" in text(row(page.text, key["id"]))
        assert "Spend unavailable: The Costs API at http://127.0.0.1:9" in page.text
        usage = await client.get(f"/projects/{project}/usage", params={"key": key["id"]})
        assert usage.status_code == 200
        assert "Budget of k: $3.00 today · spend unavailable" in text(usage.text)
