"""Projects and API keys through the console's pages, against the real key service."""

from __future__ import annotations

import re

import httpx
import pytest

from shared.apikeys import hint, is_well_formed
from tests.console.conftest import Apis
from tests.console.helpers import TOKEN, console_client, console_settings, csrf_of, sign_in

ORIGIN = {"Origin": "http://console.test"}
_SECRET = re.compile(r'id="secret-value"[^>]*value="(sk-tg-[A-Za-z0-9]+)"')


def secret_of(html: str) -> str:
    """The full key that a create or rotate answer shows."""
    found = _SECRET.search(html)
    assert found, "no secret dialog on the page"
    return found.group(1)


async def post(
    client: httpx.AsyncClient, path: str, data: dict[str, str], csrf: str
) -> httpx.Response:
    return await client.post(path, data={**data, "csrf_token": csrf}, headers=ORIGIN)


async def new_project(client: httpx.AsyncClient, name: str) -> str:
    """Create a project through its form; the id it opens on."""
    page = await client.get("/projects")
    created = await post(client, "/projects", {"name": name}, csrf_of(page.text))
    assert created.status_code == 303
    return created.headers["location"].split("/")[2]


async def test_projects_are_created_listed_and_switched(keys_only: Apis) -> None:
    settings = console_settings()
    async with console_client(settings, keys_only.transports()) as client:
        await sign_in(client)
        home = await client.get("/")
        assert home.headers["location"] == "/projects"  # no project yet
        empty = await client.get("/projects")
        assert "No projects yet" in empty.text
        csrf = csrf_of(empty.text)

        refused = await post(client, "/projects", {"name": "   "}, csrf)
        assert refused.status_code == 400
        assert 'id="project-name-error"' in refused.text  # beside the field, dialog open
        assert 'aria-invalid="true"' in refused.text
        assert "data-open-modal" in refused.text

        first = await new_project(client, "Demo")
        second = await new_project(client, "Research")
        page = await client.get(f"/projects/{first}/keys")
        assert page.status_code == 200
        assert "Project Research created." in page.text  # on the next page, once
        page = await client.get(f"/projects/{first}/keys")
        assert "Project Research created." not in page.text
        assert f'<option value="{second}"' in page.text
        assert f'<option value="{first}" selected' in page.text
        assert (await client.get("/")).headers["location"] == f"/projects/{first}/keys"
        switched = await client.get("/projects/open", params={"project": second, "page": "usage"})
        assert switched.headers["location"] == f"/projects/{second}/usage"
        listing = await client.get("/projects")
        assert "Demo" in listing.text
        assert "Research" in listing.text
        assert (await client.get("/projects/proj_doesnotexist/keys")).status_code == 404
        assert (await client.get("/projects/..%2F..%2Fx/keys")).status_code == 404


async def test_a_key_is_created_shown_once_renamed_defaulted_rotated_and_deleted(
    keys_only: Apis,
) -> None:
    async with (
        console_client(console_settings(), keys_only.transports()) as client,
        keys_only.client(keys_only.keys) as api,
    ):
        await sign_in(client)
        project = await new_project(client, "Demo")
        keys_url = f"/projects/{project}/keys"
        first_page = await client.get(keys_url)
        assert "No API keys yet" in first_page.text
        csrf = csrf_of(first_page.text)

        too_long = await post(client, keys_url, {"name": "x" * 65}, csrf)
        assert too_long.status_code == 400
        assert 'id="key-name-error"' in too_long.text  # the API's own message, by the field
        assert 'value="' + "x" * 65 + '"' in too_long.text  # what was typed stays

        created = await post(client, keys_url, {"name": "production-app"}, csrf)
        assert created.status_code == 200
        assert created.headers["cache-control"] == "no-store"
        secret = secret_of(created.text)
        assert is_well_formed(secret)
        assert "It will not be shown again" in created.text
        listed = (await api.get(f"/v1/projects/{project}/keys")).json()["data"]
        assert [(k["name"], k["hint"]) for k in listed] == [("production-app", hint(secret))]
        key_id = listed[0]["id"]

        # Without script, a dialog opens by its link: the server renders it open.
        no_script = await client.get(keys_url, params={"dialog": "create-key"})
        assert re.search(r'<dialog id="create-key"[^>]* open data-open-modal', no_script.text)
        assert '<dialog id="create-key" class="dialog" aria-labelledby' in no_script.text

        after = await client.get(keys_url)
        assert secret not in after.text  # afterwards only the hint
        assert hint(secret) in after.text
        assert "Never" in after.text  # not used yet

        second = secret_of((await post(client, keys_url, {"name": "development"}, csrf)).text)
        assert second != secret
        listed = (await api.get(f"/v1/projects/{project}/keys")).json()["data"]
        other_id = next(k["id"] for k in listed if k["name"] == "development")

        def row(html: str, key: str) -> str:
            return html.split(f'data-key-id="{key}"')[1].split("</tr>", maxsplit=1)[0]

        page = (await client.get(keys_url)).text
        assert "badge default" in row(page, key_id)  # the first key became the default
        assert "badge default" not in row(page, other_id)
        defaulted = await post(client, f"{keys_url}/{other_id}/default", {}, csrf)
        assert defaulted.status_code == 303
        page = (await client.get(keys_url)).text
        assert "development is now the default key." in page
        assert "badge default" in row(page, other_id)
        assert "badge default" not in row(page, key_id)
        assert "Set development as default" not in page
        assert "Set production-app as default" in page
        assert (await api.get(f"/v1/projects/{project}/keys/{other_id}")).json()["is_default"]

        blank = await post(client, f"{keys_url}/{key_id}/rename", {"name": ""}, csrf)
        assert blank.status_code == 400
        assert f'id="rename-name-{key_id}-error"' in blank.text
        renamed = await post(client, f"{keys_url}/{key_id}/rename", {"name": "prod"}, csrf)
        assert renamed.status_code == 303
        assert (await api.get(f"/v1/projects/{project}/keys/{key_id}")).json()["name"] == "prod"

        odd = await post(client, f"{keys_url}/{key_id}/rotate", {"grace": "12"}, csrf)
        assert odd.status_code == 400
        rotated = await post(client, f"{keys_url}/{key_id}/rotate", {"grace": "3600"}, csrf)
        assert rotated.status_code == 200
        new_secret = secret_of(rotated.text)
        assert new_secret not in (secret, second)
        assert is_well_formed(new_secret)
        assert "The old secret keeps working for 1 hour." in rotated.text
        state = (await api.get(f"/v1/projects/{project}/keys/{key_id}")).json()
        assert state["hint"] == hint(new_secret)
        assert state["previous_key_valid_until"] is not None
        assert "Old secret works until" in (await client.get(keys_url)).text

        deleted = await post(client, f"{keys_url}/{key_id}/delete", {"name": "prod"}, csrf)
        assert deleted.status_code == 303
        page = (await client.get(keys_url)).text
        assert f'data-key-id="{key_id}"' not in page
        assert "Key prod deleted." in page
        shown = (await client.get(keys_url, params={"revoked": "1"})).text
        assert "Deleted" in row(shown, key_id)
        assert "Rotate" not in row(shown, key_id)
        gone = await api.get(f"/v1/projects/{project}/keys/{key_id}")
        assert gone.json()["status"] == "revoked"

        again = await post(client, f"{keys_url}/{key_id}/default", {}, csrf)
        assert again.status_code >= 400  # the key service's refusal, shown on the page
        assert 'role="alert"' in again.text


async def test_neither_the_token_nor_a_secret_reaches_a_page_or_a_log(
    keys_only: Apis, capfd: pytest.CaptureFixture[str]
) -> None:
    pages: list[str] = []
    settings = console_settings(log_level="DEBUG")  # the most the console would ever log
    async with console_client(settings, keys_only.transports()) as client:
        signed = await sign_in(client)
        pages.append(signed.text + str(signed.headers))
        project = await new_project(client, "Secrets")
        keys_url = f"/projects/{project}/keys"
        csrf = csrf_of((await client.get(keys_url)).text)
        created = await post(client, keys_url, {"name": "one"}, csrf)
        secret = secret_of(created.text)
        key_id = (await client.get(keys_url)).text.split('data-key-id="')[1].split('"')[0]
        rotated = await post(client, f"{keys_url}/{key_id}/rotate", {"grace": "0"}, csrf)
        new_secret = secret_of(rotated.text)
        for path in ("/projects", keys_url, f"/projects/{project}/usage", "/signin"):
            response = await client.get(path)
            pages.append(response.text + str(response.headers))
        out = await client.post("/signout", data={"csrf_token": csrf}, headers=ORIGIN)
        pages.append(out.text + str(out.headers))
    logs = capfd.readouterr()
    for text in [*pages, logs.out, logs.err]:
        assert TOKEN not in text
        assert secret not in text
        assert new_secret not in text
    # The secrets were on exactly the answers to the create and rotate forms.
    assert created.text.count(secret) == 1
    assert rotated.text.count(new_secret) == 1
    assert "POST /projects/" in logs.err  # the console did log its requests
