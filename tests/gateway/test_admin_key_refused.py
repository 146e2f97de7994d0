"""An admin key (``sk-tg-admin-...``) is never an inference key: the gateway refuses it by its
format alone, before any lookup, even when a key state with its hash were somewhere."""

from __future__ import annotations

import httpx

from shared.apikeys import generate_admin, hash_key
from tests.gateway.harness import CHAT, FakeKeyService, new_key
from tests.served import Served

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


async def test_an_admin_key_gets_401_at_the_gateway(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    fake, _ = keyservice
    admin = generate_admin()
    # Even a (forged) active state under the admin key's hash does not open inference.
    secret, state = new_key()
    forged = state.model_copy(update={"key_hash": hash_key(admin), "key_id": "key_forged"})
    fake.add(forged)
    fake.add(state)
    calls = fake.calls
    async with httpx.AsyncClient() as client:
        for path, body in (("/v1/chat/completions", BODY), ("/v1/models", None)):
            answer = await client.request(
                "POST" if body else "GET",
                gateway.url + path,
                json=body,
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert answer.status_code == 401, (path, answer.text)
            assert answer.json()["error"]["code"] == "invalid_api_key"
            assert admin not in answer.text
        assert fake.calls == calls, "refused by its format, without a lookup"
        ok = await client.post(
            gateway.url + "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert ok.status_code == 200
