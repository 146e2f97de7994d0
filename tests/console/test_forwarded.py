"""The console's sign-in throttle on a real server: a forged ``X-Forwarded-For`` from a peer
nobody listed neither escapes the throttle nor locks another address out; a listed proxy's
is believed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from services.console.main import create_app
from shared.http_limits import HttpSettings
from shared.http_server import HttpProtocol
from tests.console.helpers import console_settings, sign_in
from tests.served import Served

WRONG = "console-test-operator-token-012345678X"
ATTEMPTS = 3
SETTINGS = console_settings(keys_url="http://127.0.0.1:9", signin_attempts_per_minute=ATTEMPTS)
ATTACKER, VICTIM, PROXY = "127.0.0.1", "127.0.0.2", "127.0.0.3"


@asynccontextmanager
async def console(trusted: str = "") -> AsyncIterator[Served]:
    """The console served by the protocol every service runs, proxies listed as trusted."""
    protocol = HttpProtocol.configured(HttpSettings(forwarded_allow_ips=trusted))
    app = create_app(SETTINGS)
    served = await Served(app, http=protocol).start()
    try:
        yield served
    finally:
        await served.stop()


def client_from(served: Served, address: str) -> httpx.AsyncClient:
    """A client whose connections come from address (any 127/8 address is this machine)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, base_url=served.url)


async def test_a_forged_forwarded_for_neither_escapes_nor_locks_out() -> None:
    async with (
        console() as served,
        client_from(served, ATTACKER) as attacker,
        client_from(served, VICTIM) as victim,
    ):
        # Failures sent "as" the victim count against the attacker's own address.
        for _ in range(ATTEMPTS):
            attacker.headers["x-forwarded-for"] = VICTIM
            assert (await sign_in(attacker, token=WRONG)).status_code == 401
        # Another forged address each time does not get the attacker another try.
        attacker.headers["x-forwarded-for"] = "10.1.2.3"
        assert (await sign_in(attacker, token=WRONG)).status_code == 429
        # And the victim, never wrong, signs in.
        assert (await sign_in(victim)).status_code == 303


async def test_a_listed_proxys_forwarded_for_is_believed() -> None:
    async with console(trusted=PROXY) as served, client_from(served, PROXY) as proxy:
        proxy.headers["x-forwarded-for"] = "10.0.0.1"
        for _ in range(ATTEMPTS):
            assert (await sign_in(proxy, token=WRONG)).status_code == 401
        assert (await sign_in(proxy, token=WRONG)).status_code == 429
        proxy.headers["x-forwarded-for"] = "10.0.0.2"  # another client behind the proxy
        assert (await sign_in(proxy)).status_code == 303
