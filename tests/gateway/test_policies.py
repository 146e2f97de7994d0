"""Key policies at the gateway: scopes, rate limits and budgets across two replicas."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from deploy.stack import Endpoints
from services.gateway.policies.counters import RedisCounters
from services.gateway.policies.plan import Planner
from shared.catalogue import Price
from shared.policy import Budget, RateLimits
from shared.pricing import request_cost
from tests.gateway.conftest import StartGateway
from tests.gateway.fake_billing import FakeBilling
from tests.gateway.harness import CHAT, EMBED, FakeKeyService, new_key, publish_key
from tests.polling import eventually
from tests.private_servers import Private
from tests.served import Served

PRICE = Price.model_validate(
    {
        "effective_from": "2026-01-01T00:00:00Z",
        "input_per_million": "0.1",
        "output_per_million": "0.2",
    }
)


def chat(max_tokens: int = 5, model: str = CHAT) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
    }


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def billing() -> AsyncIterator[tuple[FakeBilling, Served]]:
    fake = FakeBilling()
    served = await Served(fake.app()).start()
    yield fake, served
    await served.stop()


@pytest.fixture
async def two(make_gateway: StartGateway, billing: tuple[FakeBilling, Served]) -> list[Served]:
    """Two gateway replicas sharing Redis, reading spend from the fake ledger."""
    return [await make_gateway(billing_url=billing[1].url) for _ in range(2)]


async def _spread(
    client: httpx.AsyncClient, replicas: list[Served], secret: str, count: int, **body: Any
) -> list[httpx.Response]:
    """count requests at once, alternating between the replicas."""
    return await asyncio.gather(
        *(
            client.post(
                replicas[i % len(replicas)].url + "/v1/chat/completions",
                json=chat(**body),
                headers=auth(secret),
            )
            for i in range(count)
        )
    )


async def test_scopes_on_every_endpoint(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    chat_only, chat_state = new_key(allowed_endpoints=("chat.completions",), allowed_models=(CHAT,))
    one_model, model_state = new_key(allowed_models=(CHAT,))
    keyservice[0].add(chat_state)
    keyservice[0].add(model_state)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(chat_only))
        ).status_code == 200
        refused = await client.post(
            "/v1/chat/completions", json=chat(model="test/no-usage"), headers=auth(chat_only)
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert refused.json()["error"]["param"] == "model"
        for path, body in (
            ("/v1/embeddings", {"model": EMBED, "input": "hi"}),
            ("/v1/completions", {"model": CHAT, "prompt": "hi", "max_tokens": 1}),
            ("/v1/responses", {"model": CHAT, "input": "hi"}),
        ):
            answer = await client.post(path, json=body, headers=auth(chat_only))
            assert answer.status_code == 403, path
            assert answer.json()["error"]["code"] == "insufficient_permissions", path
        models = await client.get("/v1/models", headers=auth(chat_only))
        assert models.status_code == 403
        assert models.json()["error"]["code"] == "insufficient_permissions"

        listed = await client.get("/v1/models", headers=auth(one_model))
        assert [m["id"] for m in listed.json()["data"]] == [CHAT]
        other = await client.get(f"/v1/models/{EMBED}", headers=auth(one_model))
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "model_not_allowed"
        assert (await client.get(f"/v1/models/{CHAT}", headers=auth(one_model))).status_code == 200
        embed = await client.post(
            "/v1/embeddings", json={"model": EMBED, "input": "hi"}, headers=auth(one_model)
        )
        assert embed.status_code == 403
        assert embed.json()["error"]["code"] == "model_not_allowed"


async def test_requests_per_minute_per_key_hold_across_two_replicas(
    two: list[Served], keyservice: tuple[FakeKeyService, Served]
) -> None:
    secret, state = new_key(rate_limits=RateLimits(requests_per_minute=40))
    keyservice[0].add(state)
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await _spread(client, two, secret, 100)
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 40, 429: 60}, statuses
    ok = [a for a in answers if a.status_code == 200]
    assert {a.headers["x-ratelimit-limit-requests"] for a in ok} == {"40"}
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok) == list(range(40))
    assert all(a.headers["x-ratelimit-reset-requests"] in ("1m0s", "1m1s") for a in ok)
    for refused in (a for a in answers if a.status_code == 429):
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert "limit 40" in error["message"]


async def test_requests_per_minute_per_project_hold_for_all_its_keys(
    two: list[Served], keyservice: tuple[FakeKeyService, Served]
) -> None:
    limits = RateLimits(requests_per_minute=30)
    first, first_state = new_key(project="proj_rpm", project_rate_limits=limits)
    second, second_state = new_key(project="proj_rpm", project_rate_limits=limits)
    keyservice[0].add(first_state)
    keyservice[0].add(second_state)
    async with httpx.AsyncClient(timeout=30) as client:
        answers = [
            *await _spread(client, two, first, 50),
            *await _spread(client, two, second, 50),
        ]
    assert Counter(a.status_code for a in answers) == {200: 30, 429: 70}
    refused = next(a for a in answers if a.status_code == 429)
    assert "of this project" in refused.json()["error"]["message"]


async def test_tokens_per_minute_admit_on_the_estimate_and_settle_with_real_usage(
    two: list[Served], keyservice: tuple[FakeKeyService, Served]
) -> None:
    secret, state = new_key(rate_limits=RateLimits(tokens_per_minute=2000))
    keyservice[0].add(state)
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await _spread(client, two, secret, 100, max_tokens=50)
        ok = [a for a in answers if a.status_code == 200]
        # Each request is admitted on ceil(body bytes / 4) + max_tokens.
        body_bytes = len(httpx.Request("POST", "/", json=chat(max_tokens=50)).content)
        estimate = -(-body_bytes // 4) + 50
        assert len(ok) == 2000 // estimate, (len(ok), estimate)
        refused = [a for a in answers if a.status_code == 429]
        assert {a.json()["error"]["type"] for a in refused} == {"tokens"}
        assert all(a.headers["x-ratelimit-limit-tokens"] == "2000" for a in answers)

        too_large = await client.post(
            two[0].url + "/v1/chat/completions", json=chat(max_tokens=5000), headers=auth(secret)
        )
        assert too_large.status_code == 429
        assert too_large.json()["error"]["message"].startswith("Request too large")

        real = sum(a.json()["usage"]["total_tokens"] for a in ok)

        async def remaining() -> int:
            key = await client.get(two[1].url + "/v1/key", headers=auth(secret))
            return int(key.json()["rate_limits"]["remaining_tokens"])

        # Settled: the window holds the real tokens, not the estimates.
        await eventually(remaining, until=lambda left: left == 2000 - real, timeout=5)


async def test_a_budget_holds_under_200_concurrent_requests_over_two_replicas(
    two: list[Served], keyservice: tuple[FakeKeyService, Served]
) -> None:
    limit = Decimal("0.0005")
    secret, state = new_key(budget=Budget(limit_usd=limit, period="month"))
    keyservice[0].add(state)
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await _spread(client, two, secret, 200, max_tokens=20)
        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert ok, "some requests fit the budget"
        assert refused, "the budget refused some"
        assert {a.status_code for a in refused} == {429}
        assert {a.json()["error"]["code"] for a in refused} == {"insufficient_quota"}
        assert {a.json()["error"]["type"] for a in refused} == {"insufficient_quota"}
        spent = sum(
            (
                request_cost(
                    PRICE,
                    input_tokens=a.json()["usage"]["prompt_tokens"],
                    output_tokens=a.json()["usage"]["completion_tokens"],
                )
                for a in ok
            ),
            Decimal(0),
        )
        # Reservations are each request's worst case: what was served never passes the limit.
        assert spent <= limit
        key = await client.get(two[0].url + "/v1/key", headers=auth(secret))
        budget = key.json()["budget"]
        assert budget["limit_usd"] == "0.0005"
        assert budget["period"] == "month"
        assert budget["resets_at"] > time.time()

        async def spent_usd() -> Decimal:
            answer = await client.get(two[1].url + "/v1/key", headers=auth(secret))
            return Decimal(answer.json()["budget"]["spent_usd"])

        # The counters hold the real cost (rounded up to whole nano-dollars per request).
        await eventually(
            spent_usd,
            until=lambda s: (
                spent <= s <= spent + Decimal("0.000000001") * len(ok) + Decimal("1e-6")
            ),
            timeout=5,
        )


async def test_budgets_start_from_the_ledger_and_survive_a_redis_wipe(
    two: list[Served],
    keyservice: tuple[FakeKeyService, Served],
    billing: tuple[FakeBilling, Served],
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    secret, state = new_key(
        project="proj_ledger", budget=Budget(limit_usd=Decimal("0.001"), period="total")
    )
    keyservice[0].add(state)
    # The ledger says the key has spent all but a few requests' worth.
    billing[0].keys["proj_ledger"] = {state.key_id: Decimal("0.00095")}
    billing[0].spent["proj_ledger"] = Decimal("0.00095")
    async with httpx.AsyncClient(timeout=30) as client:
        first = await _spread(client, two, secret, 10, max_tokens=20)
        served = sum(a.status_code == 200 for a in first)
        assert 0 < served < 10, "the counter started from the ledger's spend"
        assert ("proj_ledger", 0) in billing[0].reads
        # Redis loses everything (a restart without persistence): the counter starts from the
        # ledger again, not from zero.
        names = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}bg:*")]
        assert names
        await redis_client.delete(*names)
        again = await _spread(client, two, secret, 10, max_tokens=20)
        assert sum(a.status_code == 200 for a in again) <= served


async def test_a_policy_change_takes_effect_within_a_second(
    two: list[Served],
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    await publish_key(endpoints.kafka_bootstrap, topic_prefix, state)
    async with httpx.AsyncClient(timeout=10) as client:
        for replica in two:
            answer = await client.post(
                replica.url + "/v1/chat/completions", json=chat(), headers=auth(secret)
            )
            assert answer.status_code == 200
            assert "x-ratelimit-limit-requests" not in answer.headers
        limited = state.model_copy(update={"version": 2, "allowed_models": (EMBED,)})
        published = time.monotonic()
        await publish_key(endpoints.kafka_bootstrap, topic_prefix, limited, "key.updated")
        for replica in two:
            while (
                await client.post(
                    replica.url + "/v1/chat/completions", json=chat(), headers=auth(secret)
                )
            ).status_code != 403:
                assert time.monotonic() - published < 1.0, "the change took over a second"
                await asyncio.sleep(0.01)


async def test_get_key_answers_what_its_holder_may_know(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    secret, state = new_key(
        rate_limits=RateLimits(requests_per_minute=10),
        allowed_models=(CHAT,),
        allowed_endpoints=("chat.completions", "models"),
    )
    keyservice[0].add(state)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth(secret))
        ).status_code == 200
        answer = await client.get("/v1/key", headers=auth(secret))
        assert answer.status_code == 200
        body = answer.json()
        assert body["id"] == state.key_id
        assert body["hint"] == state.hint
        assert body["name"] == "test"
        assert body["rate_limits"]["requests_per_minute"] == 10
        assert body["rate_limits"]["remaining_requests"] == 9
        assert body["rate_limits"]["tokens_per_minute"] is None
        assert body["budget"] is None
        assert body["allowed_models"] == [CHAT]
        assert body["allowed_endpoints"] == ["chat.completions", "models"]
        assert secret not in answer.text
        assert (await client.get("/v1/key")).status_code == 401


async def test_with_redis_down_limits_fall_back_to_shares_and_no_spend_is_forgotten(
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    billing: tuple[FakeBilling, Served],
    private_redis: Private,
) -> None:
    replicas = [
        await make_gateway(redis=private_redis.redis_url, billing_url=billing[1].url)
        for _ in range(2)
    ]
    secret, state = new_key(
        rate_limits=RateLimits(requests_per_minute=20),
        budget=Budget(limit_usd=Decimal("1"), period="day"),
    )
    keyservice[0].add(state)
    async with httpx.AsyncClient(timeout=30) as client:

        async def replicas_seen() -> int:
            ready = await client.get(replicas[0].url + "/readyz")
            return int(ready.json()["policy_replicas"])

        await eventually(replicas_seen, until=lambda n: n == 2, timeout=10)
        warm = await _spread(client, replicas, secret, 2)
        assert {a.status_code for a in warm} == {200}
        await private_redis.astop()
        # Each replica admits its share of the minute: 20 / 2 replicas, less what it had
        # already admitted in this window (one each).
        answers = await _spread(client, replicas, secret, 60)
        statuses = Counter(a.status_code for a in answers)
        assert statuses[200] == 18, statuses
        assert statuses[429] == 42, statuses
        served = [*warm, *(a for a in answers if a.status_code == 200)]
        spent = sum(
            (
                request_cost(
                    PRICE,
                    input_tokens=a.json()["usage"]["prompt_tokens"],
                    output_tokens=a.json()["usage"]["completion_tokens"],
                )
                for a in served
            ),
            Decimal(0),
        )
        await private_redis.astart()

        async def spent_usd() -> Decimal:
            answer = await client.get(replicas[1].url + "/v1/key", headers=auth(secret))
            budget = answer.json()["budget"]
            return Decimal(budget["spent_usd"]) if budget else Decimal(0)

        # Back: what each replica spent while Redis was away reaches the shared counter.
        await eventually(spent_usd, until=lambda s: s >= spent, timeout=15)


async def test_a_replica_raises_a_budget_to_the_ledger_when_it_first_sees_it(
    two: list[Served],
    keyservice: tuple[FakeKeyService, Served],
    billing: tuple[FakeBilling, Served],
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    secret, state = new_key(
        project="proj_stale", budget=Budget(limit_usd=Decimal("0.001"), period="total")
    )
    keyservice[0].add(state)
    # Redis holds a started counter that is behind the ledger (restored from an old snapshot).
    plan = Planner(redis_prefix).plan(state, None, None, 0, datetime.now(UTC))
    await RedisCounters(redis_client).seed(plan.budgets[0], 0, from_ledger=True)
    billing[0].keys["proj_stale"] = {state.key_id: Decimal("0.00099")}
    async with httpx.AsyncClient(timeout=30) as client:
        first = await client.post(
            two[0].url + "/v1/chat/completions", json=chat(max_tokens=20), headers=auth(secret)
        )
        assert first.status_code == 200  # admitted on the counter as Redis held it

        async def refused() -> int:
            answer = await client.post(
                two[0].url + "/v1/chat/completions", json=chat(max_tokens=20), headers=auth(secret)
            )
            return answer.status_code

        # At once, not at the next periodic reconciliation (30 s away).
        await eventually(refused, until=lambda s: s == 429, timeout=3)
