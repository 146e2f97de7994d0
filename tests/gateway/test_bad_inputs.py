"""Bad inputs get OpenAI's errors, and nothing unauthenticated ever reaches an upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from deploy.stack import Endpoints
from shared.apikeys import generate
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import (
    CHAT,
    EMBED,
    FakeKeyService,
    new_key,
    upstream_requests,
    usage_events,
)
from tests.served import Served

BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client(gateway: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        yield http


def _broken_checksum(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer  \t x", "invalid_api_key"),
        ("Token sk-tg-abc", None),
        ("Bearer sk-not-ours-at-all-1234567890", "invalid_api_key"),
        ("Bearer sk-proj-" + "x" * 40, "invalid_api_key"),
    ],
)
async def test_missing_or_malformed_authorization(
    client: httpx.AsyncClient, upstream: Served, authorization: str | None, code: str | None
) -> None:
    before = await upstream_requests(upstream.url)
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    if code is None:
        assert error["message"].startswith("You didn't provide an API key.")
    assert await upstream_requests(upstream.url) == before


async def test_broken_checksum_is_refused_without_any_lookup(
    client: httpx.AsyncClient, keyservice: tuple[FakeKeyService, Served], upstream: Served
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    before = (await upstream_requests(upstream.url), keyservice[0].calls)
    answer = await client.post(
        "/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {_broken_checksum(secret)}"},
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert secret not in answer.text
    assert (await upstream_requests(upstream.url), keyservice[0].calls) == before


async def test_invented_well_formed_key_is_refused_and_remembered_briefly(
    client: httpx.AsyncClient, keyservice: tuple[FakeKeyService, Served], upstream: Served
) -> None:
    invented = generate()
    before = await upstream_requests(upstream.url)
    headers = {"Authorization": f"Bearer {invented}"}
    first = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert first.status_code == 401
    assert first.json()["error"]["code"] == "invalid_api_key"
    assert keyservice[0].calls == 1
    second = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert second.status_code == 401
    assert keyservice[0].calls == 1, "the negative cache answered the second time"
    assert await upstream_requests(upstream.url) == before


async def test_request_errors_after_authentication(
    client: httpx.AsyncClient,
    keyservice: tuple[FakeKeyService, Served],
    upstream: Served,
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    auth = {"Authorization": f"Bearer {secret}"}
    before = await upstream_requests(upstream.url)

    unknown = await client.post(
        "/v1/chat/completions", json={**BODY, "model": "nobody/nothing"}, headers=auth
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert unknown.json()["error"]["param"] == "model"

    not_json = await client.post(
        "/v1/chat/completions",
        content=b'{"model": "x", ',
        headers={**auth, "content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert "could not parse the JSON body" in not_json.json()["error"]["message"]

    not_object = await client.post("/v1/chat/completions", json=[1, 2], headers=auth)
    assert not_object.status_code == 400

    no_model = await client.post("/v1/chat/completions", json={"messages": []}, headers=auth)
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"

    wrong_kind = await client.post(
        "/v1/chat/completions", json={**BODY, "model": EMBED}, headers=auth
    )
    assert wrong_kind.status_code == 400
    assert wrong_kind.json()["error"]["code"] == "model_not_supported"

    assert await upstream_requests(upstream.url) == before
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 5)
    assert sorted(e.status_code for e in events) == [400, 400, 400, 400, 404]
    assert {e.key_id for e in events} == {state.key_id}


async def test_oversized_body_is_413(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    upstream: Served,
) -> None:
    gateway = await make_gateway(max_body_bytes=1_000_000)
    secret, state = new_key()
    keyservice[0].add(state)
    before = await upstream_requests(upstream.url)
    sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    try:
        fits = await sdk.embeddings.create(model=EMBED, input=["x" * 1000] * 900)
        assert len(fits.data) == 900
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.embeddings.create(model=EMBED, input=["x" * 1000] * 1100)
    finally:
        await sdk.close()
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    assert await upstream_requests(upstream.url) == before + 1


async def test_default_limit_is_32_mb(
    client: httpx.AsyncClient, keyservice: tuple[FakeKeyService, Served], upstream: Served
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    before = await upstream_requests(upstream.url)
    body = b'{"model": "' + b"x" * (32 * 1024 * 1024) + b'"}'
    answer = await client.post(
        "/v1/embeddings",
        content=body,
        headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert await upstream_requests(upstream.url) == before
