"""Sign-in, sign-out, the session cookie and CSRF, on the console app in this process.

The key service here is an address nobody answers on: these tests must never need it, and a
page that does need it shows the key service's outage instead of crashing. Sign-in with the
operator token works all the same (break-glass, logged as not audited); an admin key cannot
be checked, and says so.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
import pytest
from pydantic import SecretStr

from services.console.access import ROOT
from services.console.session import COOKIE_NAME, SessionStore, SignInThrottle
from shared import apikeys
from tests.console.helpers import TOKEN, console_client, console_settings, csrf_of, sign_in

pytestmark = pytest.mark.unit  # no server: `make test-unit`

DOWN_VALUES: dict[str, object] = {"keys_url": "http://127.0.0.1:9", "api_timeout_s": 2}
DOWN = console_settings(**DOWN_VALUES)
ORIGIN = {"Origin": "http://console.test"}


def _cookie(response: httpx.Response, name: str) -> SimpleCookie:
    jar = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            jar.load(header)
    assert name in jar, f"no {name} cookie set"
    return jar


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/projects",
        "/projects/proj_x",
        "/projects/proj_x/keys",
        "/projects/proj_x/keys?dialog=create-key",
        "/projects/proj_x/usage?period=30d",
        "/projects/proj_x/usage.csv?section=keys",
        "/projects/open?project=proj_x",
    ],
)
async def test_every_page_sends_the_signed_out_to_sign_in(path: str) -> None:
    async with console_client(DOWN) as client:
        response = await client.get(path)
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith("/signin")
        if path != "/":
            assert httpx.URL(location).params["next"] == path


@pytest.mark.parametrize(
    "path",
    [
        "/projects",
        "/projects/proj_x/keys",
        "/projects/proj_x/keys/key_y/rename",
        "/projects/proj_x/keys/key_y/default",
        "/projects/proj_x/keys/key_y/rotate",
        "/projects/proj_x/keys/key_y/delete",
        "/signout",
    ],
)
async def test_no_form_post_works_signed_out(path: str) -> None:
    async with console_client(DOWN) as client:
        response = await client.post(path, data={"name": "x", "csrf_token": "x"}, headers=ORIGIN)
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"


async def test_a_wrong_token_cannot_sign_in() -> None:
    async with console_client(DOWN) as client:
        response = await sign_in(client, token="console-test-operator-token-012345678X")
        assert response.status_code == 401
        assert COOKIE_NAME not in response.headers.get("set-cookie", "")
        assert 'aria-describedby="token-error"' in response.text
        assert "neither the operator token nor an active admin key" in response.text
        assert (await client.get("/projects")).status_code == 303
        empty = await sign_in(client, token="")
        assert empty.status_code == 401


async def test_sign_in_gives_a_strict_httponly_cookie_that_sign_out_ends() -> None:
    async with console_client(DOWN) as client:
        response = await sign_in(client)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        cookie = _cookie(response, COOKIE_NAME)[COOKIE_NAME]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "strict"
        assert cookie["path"] == "/"
        assert not cookie["secure"]  # plain http here; see the https test
        assert TOKEN not in cookie.value
        assert len(cookie.value) >= 40
        raw = cookie.value

        again = await client.get("/signin")  # signed in already: straight on
        assert again.status_code == 303
        assert again.headers["location"] == "/"
        page = await client.get("/projects")  # signed in: the key service's outage, no redirect
        assert page.status_code == 503
        assert "did not answer" in page.text

        out = await client.post("/signout", data={"csrf_token": csrf_of(page.text)}, headers=ORIGIN)
        assert out.status_code == 303
        assert out.headers["location"] == "/signin?signed_out=1"
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert (await client.get("/projects")).status_code == 303
        # The old cookie is dead on the server too, not only forgotten by the browser.
        client.cookies.set(COOKIE_NAME, raw)
        replay = await client.get("/projects")
        assert replay.status_code == 303


async def test_the_operator_token_signs_in_unaudited_while_the_key_service_is_down(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with console_client(DOWN) as client:
        response = await sign_in(client)
        assert response.status_code == 303
    logged = capfd.readouterr().err  # the app's log lines (setup_logging writes to stderr)
    assert "sign-in not audited: key service unavailable" in logged
    assert TOKEN not in logged


async def test_an_admin_key_cannot_sign_in_while_the_key_service_is_down() -> None:
    admin_key = apikeys.generate_admin()
    async with console_client(console_settings(**DOWN_VALUES, signin_attempts_per_minute=2)) as c:
        response = await sign_in(c, token=admin_key)
        assert response.status_code == 503
        assert "could not be reached" in response.text
        assert admin_key not in response.text
        assert COOKIE_NAME not in response.headers.get("set-cookie", "")
        # Not the operator token either: it counts against the address's attempts.
        assert (await sign_in(c, token=admin_key)).status_code == 503
        assert (await sign_in(c)).status_code == 429


async def test_cookies_are_secure_over_https() -> None:
    async with console_client(DOWN, base_url="https://console.test") as client:
        form = await client.get("/signin")
        assert _cookie(form, "tollgate_console_signin")["tollgate_console_signin"]["secure"]
        response = await client.post(
            "/signin",
            data={"token": TOKEN, "csrf_token": csrf_of(form.text)},
            headers={"Origin": "https://console.test"},
        )
        assert response.status_code == 303
        assert _cookie(response, COOKIE_NAME)[COOKIE_NAME]["secure"] is True


async def test_sign_in_needs_its_csrf_token_and_this_origin() -> None:
    async with console_client(DOWN) as client:
        form = await client.get("/signin")
        token = csrf_of(form.text)
        missing = await client.post("/signin", data={"token": TOKEN}, headers=ORIGIN)
        assert missing.status_code == 403
        wrong = await client.post(
            "/signin", data={"token": TOKEN, "csrf_token": token + "x"}, headers=ORIGIN
        )
        assert wrong.status_code == 403
        foreign = await client.post(
            "/signin",
            data={"token": TOKEN, "csrf_token": token},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        client.cookies.clear()  # the token alone, without the cookie it is tied to
        bare = await client.post("/signin", data={"token": TOKEN, "csrf_token": token})
        assert bare.status_code == 403
        for refused in (missing, wrong, foreign, bare):
            assert COOKIE_NAME not in refused.headers.get("set-cookie", "")


async def test_signed_in_forms_refuse_a_missing_wrong_or_foreign_token() -> None:
    async with console_client(DOWN) as client:
        await sign_in(client)
        page = await client.get("/projects")
        token = csrf_of(page.text)
        cases = [
            ({"name": "p"}, ORIGIN),
            ({"name": "p", "csrf_token": token[:-1]}, ORIGIN),
            ({"name": "p", "csrf_token": token}, {"Origin": "http://evil.example"}),
            ({"name": "p", "csrf_token": token}, {"Referer": "http://evil.example/page"}),
            ({"csrf_token": token}, {"Origin": "null"}),
        ]
        for data, headers in cases:
            response = await client.post("/projects", data=data, headers=headers)
            # 403 before any call: with a valid token it would be the key service's 503.
            assert response.status_code == 403, (data, headers)
            assert "nothing was changed" in response.text
        refused = await client.post("/signout", data={}, headers=ORIGIN)
        assert refused.status_code == 403
        assert (await client.get("/projects")).status_code == 503  # still signed in
        accepted = await client.post("/projects", data={"name": "p", "csrf_token": token})
        assert accepted.status_code == 503  # passed the CSRF check, reached the key service


async def test_sign_in_goes_back_only_to_a_local_page() -> None:
    async with console_client(DOWN) as client:
        first = await client.get("/projects/proj_x/usage?period=24h")
        target = httpx.URL(first.headers["location"]).params["next"]
        form = await client.get("/signin", params={"next": target})
        assert f'value="{target}"' in form.text.replace("&amp;", "&")
        ok = await client.post(
            "/signin",
            data={"token": TOKEN, "csrf_token": csrf_of(form.text), "next": target},
            headers=ORIGIN,
        )
        assert ok.headers["location"] == "/projects/proj_x/usage?period=24h"
    for evil in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        async with console_client(DOWN) as client:
            form = await client.get("/signin")
            response = await client.post(
                "/signin",
                data={"token": TOKEN, "csrf_token": csrf_of(form.text), "next": evil},
                headers=ORIGIN,
            )
            assert response.headers["location"] == "/"


async def test_failed_sign_ins_are_throttled() -> None:
    async with console_client(console_settings(signin_attempts_per_minute=3)) as client:
        for _ in range(3):
            assert (await sign_in(client, token="not-the-token-but-long-enough")).status_code == 401
        blocked = await sign_in(client)  # even the right token waits now
        assert blocked.status_code == 429
        assert COOKIE_NAME not in blocked.headers.get("set-cookie", "")


async def test_pages_carry_security_headers_and_no_cache() -> None:
    async with console_client(DOWN) as client:
        page = await client.get("/signin")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        for asset in ("/static/console.css", "/static/console.js", "/static/favicon.svg"):
            assert (await client.get(asset)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


def test_sessions_end_after_idle_time_and_maximum_age() -> None:
    now = [1000.0]
    store = SessionStore(idle_s=60, max_s=300, clock=lambda: now[0])
    token = SecretStr(TOKEN)
    raw, session = store.create(token, ROOT)
    assert store.get(raw) is session
    now[0] += 59
    assert store.get(raw) is session  # touched: the idle clock restarts
    now[0] += 61
    assert store.get(raw) is None
    raw, session = store.create(token, ROOT)
    for _ in range(6):
        now[0] += 50
        assert store.get(raw) is session
    now[0] += 1
    assert store.get(raw) is None  # active all along, but past the maximum age
    assert store.get(None) is None
    assert store.get("forged") is None


def test_the_throttle_counts_per_address_within_a_minute() -> None:
    now = [0.0]
    throttle = SignInThrottle(limit=2, clock=lambda: now[0])
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1")
    assert not throttle.blocked("10.0.0.2")
    now[0] += 61
    assert not throttle.blocked("10.0.0.1")  # the minute has passed
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")  # a success forgets earlier failures
