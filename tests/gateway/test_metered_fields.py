"""What a client sends cannot escape metering or budgets, nor take the gateway's memory:
fields of the wrong type refused, the output limit reserved as the upstream reads it, bodies
of tiny values refused before parsing, large bodies taking turns, a client leaving mid-upload
metered as 499 (real gateway, demo upstream, Kafka and Redis)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.stack import Endpoints
from shared.policy import Budget, RateLimits
from tests.gateway.conftest import StartGateway
from tests.gateway.fake_billing import FakeBilling
from tests.gateway.harness import CHAT, FakeKeyService, new_key, upstream_requests, usage_events
from tests.served import Served

PRICE_IN = Decimal("0.1") / 1_000_000
PRICE_OUT = Decimal("0.2") / 1_000_000


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], **fields}


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def billing() -> AsyncIterator[tuple[FakeBilling, Served]]:
    fake = FakeBilling()
    served = await Served(fake.app()).start()
    yield fake, served
    await served.stop()


@pytest.fixture
async def metered(make_gateway: StartGateway, billing: tuple[FakeBilling, Served]) -> Served:
    return await make_gateway(billing_url=billing[1].url)


@pytest.mark.parametrize("stream", [1, "true", "yes", 0])
async def test_a_stream_flag_that_is_not_a_boolean_is_refused_before_the_upstream(
    *,
    metered: Served,
    keyservice: tuple[FakeKeyService, Served],
    upstream: Served,
    endpoints: Endpoints,
    topic_prefix: str,
    stream: object,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    before = await upstream_requests(upstream.url)
    async with httpx.AsyncClient(base_url=metered.url, timeout=10) as client:
        for path, body in (
            ("/v1/chat/completions", _chat(stream=stream, max_tokens=50)),
            ("/v1/completions", {"model": CHAT, "prompt": "hi", "stream": stream}),
            ("/v1/responses", {"model": CHAT, "input": "hi", "stream": stream}),
        ):
            answer = await client.post(path, json=body, headers=_auth(secret))
            assert answer.status_code == 400, (path, answer.text)
            error = answer.json()["error"]
            assert (error["param"], error["code"]) == ("stream", "invalid_type")
            assert error["type"] == "invalid_request_error"
    assert await upstream_requests(upstream.url) == before  # nothing produced, nothing unbilled
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 3)
    assert {e.status_code for e in events} == {400}


async def test_an_output_limit_the_upstream_honours_first_is_what_a_budget_reserves(
    metered: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    # max_tokens 1 with max_completion_tokens 100: upstreams produce 100. The budget fits
    # about 25 such answers; 60 at once must not spend more than it.
    limit = Decimal("0.0005")
    secret, state = new_key(budget=Budget(limit_usd=limit, period="month"))
    keyservice[0].add(state)
    body = _chat(max_tokens=1, max_completion_tokens=100)
    async with httpx.AsyncClient(base_url=metered.url, timeout=60) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body, headers=_auth(secret))
                for _ in range(60)
            )
        )
    ok = [a for a in answers if a.status_code == 200]
    assert ok
    assert {a.json()["usage"]["completion_tokens"] for a in ok} == {100}
    refused = [a for a in answers if a.status_code != 200]
    assert {a.json()["error"]["code"] for a in refused} == {"insufficient_quota"}
    spent = sum(
        (
            a.json()["usage"]["prompt_tokens"] * PRICE_IN
            + a.json()["usage"]["completion_tokens"] * PRICE_OUT
            for a in ok
        ),
        Decimal(0),
    )
    assert spent <= limit, (spent, len(ok))


@pytest.mark.parametrize(
    ("fields", "produced"),
    [
        ({"max_tokens": 1, "max_completion_tokens": 60}, 60),
        ({"max_tokens": 60, "max_completion_tokens": 1}, 1),
        ({"max_completion_tokens": 60, "n": 2}, 60),
    ],
)
async def test_a_tokens_per_minute_limit_holds_for_every_combination_of_limit_fields(
    metered: Served,
    keyservice: tuple[FakeKeyService, Served],
    fields: dict[str, int],
    produced: int,
) -> None:
    secret, state = new_key(rate_limits=RateLimits(tokens_per_minute=1000))
    keyservice[0].add(state)
    body = _chat(**fields)
    async with httpx.AsyncClient(base_url=metered.url, timeout=60) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body, headers=_auth(secret))
                for _ in range(40)
            )
        )
    ok = [a for a in answers if a.status_code == 200]
    assert ok
    assert {a.json()["usage"]["completion_tokens"] for a in ok} == {produced}
    assert {a.status_code for a in answers} <= {200, 429}
    assert sum(a.json()["usage"]["total_tokens"] for a in ok) <= 1000


async def test_an_output_limit_past_the_whole_minute_is_never_admitted(
    metered: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    # Reserved as 1 token before: 20 of these let 81,920 tokens through a limit of 2,000.
    secret, state = new_key(rate_limits=RateLimits(tokens_per_minute=2000))
    keyservice[0].add(state)
    body = _chat(max_tokens=1, max_completion_tokens=4096)
    async with httpx.AsyncClient(base_url=metered.url, timeout=60) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body, headers=_auth(secret))
                for _ in range(20)
            )
        )
    assert {a.status_code for a in answers} == {429}
    assert all(a.json()["error"]["message"].startswith("Request too large") for a in answers)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_tokens": "4096"}, "max_tokens"),
        ({"n": 1.5}, "n"),
        ({"n": 0}, "n"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
    ],
)
async def test_limit_fields_of_a_wrong_type_or_range_are_400_naming_them(
    metered: Served,
    keyservice: tuple[FakeKeyService, Served],
    fields: dict[str, Any],
    param: str,
) -> None:
    secret, state = new_key(budget=Budget(limit_usd=Decimal("1"), period="month"))
    keyservice[0].add(state)
    async with httpx.AsyncClient(base_url=metered.url, timeout=10) as client:
        answer = await client.post(
            "/v1/chat/completions", json=_chat(**fields), headers=_auth(secret)
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def _rss_peak_since_reset() -> tuple[int, int]:
    """(current, peak) resident bytes of this process; the peak reset first when asked."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


async def test_a_body_of_tiny_json_values_is_refused_without_the_memory_parsing_takes(
    metered: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    # 32 MiB of [{},{},...]: parsed, a gigabyte. The gateway runs in this process.
    secret, state = new_key()
    keyservice[0].add(state)
    count = (32 << 20) // 3 - 200
    body = b'{"model": "%s", "input": [' % CHAT.encode() + b",".join([b"{}"] * count) + b"]}"
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    before, _ = _rss_peak_since_reset()
    async with httpx.AsyncClient(base_url=metered.url, timeout=60) as client:
        answer = await client.post(
            "/v1/chat/completions",
            content=body,
            headers={**_auth(secret), "content-type": "application/json"},
        )
        assert answer.status_code == 400
        assert "values" in answer.json()["error"]["message"]
        assert (
            await client.post(
                "/v1/chat/completions", json=_chat(max_tokens=2), headers=_auth(secret)
            )
        ).status_code == 200
    _, peak = _rss_peak_since_reset()
    # The client's copy of the body (this process's too), the server's, its structure picked
    # out to be counted, and the allocator's slack: a few times the body, never the ~1 GB its
    # parse would take.
    assert peak - before < 8 * len(body), (before >> 20, peak >> 20)


async def test_large_bodies_take_turns_and_one_past_the_wait_gets_503(
    make_gateway: StartGateway, keyservice: tuple[FakeKeyService, Served]
) -> None:
    gateway = await make_gateway(
        large_body_bytes=100_000, large_body_budget_bytes=300_000, large_body_wait_s=0.2
    )
    secret, state = new_key()
    keyservice[0].add(state)
    # test/slow's upstream takes 3 s and the gateway gives up after 0.5 s (504): the first
    # body holds its share until then.
    big = {"model": "test/slow", "messages": [{"role": "user", "content": "w " * 100_000}]}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        first = asyncio.ensure_future(
            client.post("/v1/chat/completions", json=big, headers=_auth(secret))
        )
        await asyncio.sleep(0.1)
        second = await client.post("/v1/chat/completions", json=big, headers=_auth(secret))
        assert second.status_code == 503
        assert second.headers["retry-after"] == "1"
        assert "large requests" in second.json()["error"]["message"]
        assert (await first).status_code == 504
        # Its share given back: the next one goes.
        again = {**big, "model": CHAT, "max_tokens": 2}
        assert (
            await client.post("/v1/chat/completions", json=again, headers=_auth(secret))
        ).status_code == 200


async def test_a_client_leaving_mid_upload_is_metered_as_499_and_logged_as_nothing(
    metered: Served,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    host, port = metered.url.removeprefix("http://").split(":")
    with caplog.at_level(logging.WARNING):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'authorization: Bearer %s\r\ncontent-length: 1000\r\n\r\n{"model": ' % secret.encode()
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 1)
    assert [e.status_code for e in events] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
