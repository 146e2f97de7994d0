"""A model served by a fleet of real demo upstreams, through a real gateway on Kafka and Redis:
failover when one is SIGKILLed under load, balance by load, reloads, retries, health."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from deploy.demo_upstream import create_app as create_upstream
from deploy.ports import free_port
from deploy.stack import Endpoints
from tests.gateway.conftest import StartGateway
from tests.gateway.fleet_harness import (
    MODEL,
    Load,
    UpstreamProcess,
    endpoints_block,
    fleet_catalogue,
    served_count,
    served_upstreams,
)
from tests.gateway.harness import CHAT, FakeKeyService, new_key, usage_events
from tests.polling import eventually
from tests.served import Served

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def key_for(keyservice: tuple[FakeKeyService, Served]) -> str:
    secret, state = new_key()
    keyservice[0].add(state)
    return secret


async def upstreams_of(client: httpx.AsyncClient, gateway: Served) -> dict[str, list[str]]:
    ready = (await client.get(gateway.url + "/readyz")).json()
    return ready["upstreams"][MODEL]  # type: ignore[no-any-return]


async def chat(client: httpx.AsyncClient, gateway: Served, secret: str) -> httpx.Response:
    return await client.post(
        gateway.url + "/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {secret}"},
    )


async def requests_at_once(
    client: httpx.AsyncClient, gateway: Served, secret: str, *, total: int, at_once: int
) -> None:
    """``total`` chat requests, ``at_once`` in flight at any time, each answered 200."""
    slots = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with slots:
            assert (await chat(client, gateway, secret)).status_code == 200

    await asyncio.gather(*(one() for _ in range(total)))


async def test_an_endpoint_sigkilled_under_load_fails_only_what_it_held(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    fleet = [await UpstreamProcess(delay_ms=30).start() for _ in range(3)]
    victim = fleet[0]
    try:
        catalogue = fleet_catalogue(
            tmp_path, endpoints_block(*(u.url for u in fleet), ejection="{base_s: 0.5}")
        )
        gateway = await make_gateway(catalogue=catalogue)
        load = Load(gateway.url, key_for(keyservice), workers=6)
        async with httpx.AsyncClient() as client:
            load.start()
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            victim.kill()
            await eventually(
                lambda: upstreams_of(client, gateway),
                until=lambda u: victim.url + "/v1" in u["ejected"],
                timeout=1.0,
                interval=0.02,
                what="the dead endpoint ejected within a second",
            )
            ejected_after = time.monotonic() - killed
            await asyncio.sleep(0.5)
            await victim.start()  # the same port: it must come back
            restarted = time.monotonic()
            await eventually(
                lambda: upstreams_of(client, gateway),
                until=lambda u: victim.url + "/v1" in u["healthy"],
                timeout=10.0,
                what="the restarted endpoint back",
            )
            back_after = time.monotonic() - restarted
            await eventually(
                lambda: served_count(client, victim.url),
                until=lambda n: n > 0,
                timeout=5.0,
                what="the restarted endpoint serving again",
            )
            outcomes = await load.stop()
        assert back_after < 5.0
        print(f"ejected after {ejected_after:.3f} s, back {back_after:.3f} s after its restart")
        assert len(outcomes) > 100
        failed = [o for o in outcomes if o.status != 200 or not o.complete]
        # Only requests under way at the victim when it died may fail: none started after.
        assert all(o.started < killed < o.ended for o in failed), failed
        assert len(failed) <= load.workers
        # Usage exactly: one event per request, the answered ones as the answer said.
        events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, len(outcomes))
        by_request = {e.request_id: e for e in events}
        assert set(by_request) == {o.request_id for o in outcomes}
        served_by = Counter(by_request[o.request_id].upstream_endpoint for o in outcomes)
        assert set(served_by) == {u.url + "/v1" for u in fleet}
        for outcome in outcomes:
            event = by_request[outcome.request_id]
            if outcome.usage is not None:
                assert event.input_tokens == outcome.usage["prompt_tokens"]
                assert event.output_tokens == outcome.usage["completion_tokens"]
            if outcome in failed:
                assert event.upstream_endpoint == victim.url + "/v1"
    finally:
        for upstream in fleet:
            upstream.stop()


async def test_a_slow_endpoint_gets_a_share_that_falls_with_its_speed(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    fleet = await served_upstreams(10, 10, 10)
    slow = fleet[2]
    secret = key_for(keyservice)
    try:
        gateway = await make_gateway(
            catalogue=fleet_catalogue(tmp_path, endpoints_block(*(u.url for u in fleet)))
        )
        shares: dict[int, float] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            for delay in (10, 60, 240):
                await client.post(slow.url + "/demo/delay", json={"delay_ms": delay})
                before = [await served_count(client, u.url) for u in fleet]
                await requests_at_once(client, gateway, secret, total=300, at_once=12)
                after = [await served_count(client, u.url) for u in fleet]
                served = [a - b for a, b in zip(after, before, strict=True)]
                shares[delay] = served[2] / sum(served)
        assert shares[10] > 0.25  # equal: about a third
        assert shares[10] > shares[60] > shares[240]
        assert shares[240] < 0.15
    finally:
        for upstream in fleet:
            await upstream.stop()


async def test_equal_endpoints_get_shares_within_ten_percent(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    fleet = await served_upstreams(15, 15, 15)
    secret = key_for(keyservice)
    try:
        gateway = await make_gateway(
            catalogue=fleet_catalogue(tmp_path, endpoints_block(*(u.url for u in fleet)))
        )
        async with httpx.AsyncClient(timeout=30) as client:
            await requests_at_once(client, gateway, secret, total=900, at_once=12)
            served = [await served_count(client, u.url) for u in fleet]
        assert sum(served) == 900
        assert max(served) / min(served) <= 1.10, served
    finally:
        for upstream in fleet:
            await upstream.stop()


async def test_a_catalogue_reload_under_load_fails_no_request(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    first, kept, added = await served_upstreams(20, 20, 20)
    try:
        catalogue = fleet_catalogue(tmp_path, endpoints_block(first.url, kept.url))
        gateway = await make_gateway(catalogue=catalogue, catalogue_poll_s=0.05)
        load = Load(gateway.url, key_for(keyservice), workers=6)
        async with httpx.AsyncClient() as client:
            load.start()
            await eventually(lambda: served_count(client, first.url), until=lambda n: n > 20)
            fleet_catalogue(tmp_path, endpoints_block(kept.url, added.url))
            await eventually(
                lambda: served_count(client, added.url), until=lambda n: n > 20, timeout=5.0
            )
            gone = await served_count(client, first.url)
            await asyncio.sleep(0.3)
            assert await served_count(client, first.url) == gone  # nothing new sent there
            ready = await upstreams_of(client, gateway)
            outcomes = await load.stop()
        assert ready == {"healthy": [kept.url + "/v1", added.url + "/v1"], "ejected": []}
        assert all(o.status == 200 and o.complete for o in outcomes)
    finally:
        for upstream in (first, kept, added):
            await upstream.stop()


async def test_a_dead_endpoint_is_retried_elsewhere_and_named_on_usage(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    (live,) = await served_upstreams(0)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        gateway = await make_gateway(
            catalogue=fleet_catalogue(tmp_path, endpoints_block(dead, live.url))
        )
        secret = key_for(keyservice)
        async with httpx.AsyncClient() as client:
            answers = [await chat(client, gateway, secret) for _ in range(20)]
            assert [a.status_code for a in answers] == [200] * 20
            ready = await upstreams_of(client, gateway)
            metrics = (await client.get(gateway.url + "/metrics")).text
        assert ready == {"healthy": [live.url + "/v1"], "ejected": [dead + "/v1"]}
        events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 20)
        assert {e.upstream_endpoint for e in events} == {live.url + "/v1"}
        at_dead = {"model": MODEL, "upstream_endpoint": dead + "/v1"}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }

        def sample(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted({**at_dead, **labels}.items())))]

        assert sample("tollgate_gateway_upstream_errors_total", kind="connect") == 3
        assert sample("tollgate_gateway_upstream_healthy") == 0
        assert sample("tollgate_gateway_upstream_ejections_total") == 1
        assert sample("tollgate_gateway_upstream_requests_total") == 3
    finally:
        await live.stop()


async def test_with_no_healthy_endpoint_the_answer_is_a_quick_503(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    gateway = await make_gateway(
        catalogue=fleet_catalogue(tmp_path, endpoints_block(*dead, ejection="{base_s: 30}"))
    )
    secret = key_for(keyservice)
    async with httpx.AsyncClient() as client:
        statuses = []
        for _ in range(6):
            started = time.monotonic()
            answer = await chat(client, gateway, secret)
            assert time.monotonic() - started < 1.0
            statuses.append(answer.status_code)
        assert statuses[0] == 502  # both refused: nothing more to try
        assert statuses[-1] == 503
        assert answer.json()["error"]["code"] == "no_healthy_upstream"
        assert answer.json()["error"]["type"] == "server_error"
        assert 25 <= int(answer.headers["retry-after"]) <= 30


async def test_a_dns_name_is_resolved_into_endpoints(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    (live,) = await served_upstreams(0)
    try:
        block = f"      dns: {{name: localhost, port: {live.port}, interval_s: 0.2}}"
        gateway = await make_gateway(catalogue=fleet_catalogue(tmp_path, block))
        secret = key_for(keyservice)
        async with httpx.AsyncClient() as client:
            answers = [await chat(client, gateway, secret) for _ in range(10)]
            ready = await upstreams_of(client, gateway)
        # localhost may also be ::1, where nothing listens: retried, then ejected.
        assert [a.status_code for a in answers] == [200] * 10
        assert f"http://127.0.0.1:{live.port}/v1" in ready["healthy"]
    finally:
        await live.stop()


async def test_server_queue_sends_requests_away_from_a_queued_server(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    busy, idle = await served_upstreams(300, 10, max_running=1)
    secret = key_for(keyservice)
    try:
        block = endpoints_block(
            busy.url, idle.url, balance="server_queue", server_queue="{interval_s: 0.05}"
        )
        gateway = await make_gateway(catalogue=fleet_catalogue(tmp_path, block))
        async with httpx.AsyncClient(timeout=30) as client:
            # Another gateway's work (straight to the server): one running, five waiting.
            direct = [
                asyncio.create_task(
                    client.post(
                        busy.url + "/v1/chat/completions",
                        json={**BODY, "model": CHAT},
                    )
                )
                for _ in range(6)
            ]
            await eventually(
                lambda: client.get(busy.url + "/demo/stats"),
                until=lambda r: r.json()["waiting"] == 5,
            )
            await asyncio.sleep(0.2)  # read by the gateway
            before = await served_count(client, idle.url)
            answers = [await chat(client, gateway, secret) for _ in range(10)]
            assert [a.status_code for a in answers] == [200] * 10
            assert await served_count(client, idle.url) - before == 10
            await asyncio.gather(*direct)
    finally:
        await busy.stop()
        await idle.stop()


async def test_a_key_and_its_prefix_stick_to_one_endpoint(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    fleet = await served_upstreams(0, 0, 0)
    secret = key_for(keyservice)
    try:
        block = endpoints_block(*(u.url for u in fleet), affinity="key_prefix")
        gateway = await make_gateway(catalogue=fleet_catalogue(tmp_path, block))
        async with httpx.AsyncClient() as client:
            for _ in range(15):
                assert (await chat(client, gateway, secret)).status_code == 200
            served = [await served_count(client, u.url) for u in fleet]
        assert sorted(served) == [0, 0, 15]
    finally:
        for upstream in fleet:
            await upstream.stop()


def sick_on_health(app: object) -> object:
    """The demo upstream, but its /health answers 503 (its inference still works)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)  # type: ignore[operator]

    return wrapped


async def test_an_active_probe_that_fails_ejects_the_endpoint(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
) -> None:
    (well,) = await served_upstreams(0)
    sick = await Served(sick_on_health(create_upstream(embedding_dimensions=16))).start()
    try:
        block = endpoints_block(
            well.url, sick.url, health="{path: /health, interval_s: 0.1, timeout_s: 1}"
        )
        gateway = await make_gateway(catalogue=fleet_catalogue(tmp_path, block))
        async with httpx.AsyncClient() as client:
            ready = await eventually(
                lambda: upstreams_of(client, gateway),
                until=lambda u: u["ejected"] == [sick.url + "/v1"],
                timeout=3.0,
            )
            assert ready["healthy"] == [well.url + "/v1"]
            secret = key_for(keyservice)
            before = await served_count(client, sick.url)
            for _ in range(10):
                assert (await chat(client, gateway, secret)).status_code == 200
            assert await served_count(client, sick.url) == before
    finally:
        await well.stop()
        await sick.stop()


@pytest.mark.parametrize("status", [500, 429])
async def test_an_endpoint_answering_errors_is_ejected(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    tmp_path: Path,
    status: int,
) -> None:
    (well,) = await served_upstreams(0)
    failing = await Served(answering(status)).start()
    try:
        block = endpoints_block(well.url, failing.url, ejection="{after_failures: 2, base_s: 30}")
        gateway = await make_gateway(catalogue=fleet_catalogue(tmp_path, block))
        secret = key_for(keyservice)
        async with httpx.AsyncClient() as client:
            statuses = Counter(
                [(await chat(client, gateway, secret)).status_code for _ in range(30)]
            )
            ready = await upstreams_of(client, gateway)
        # An answer already had is never sent again: the two failures reach the client.
        assert statuses[200] == 28
        assert ready["ejected"] == [failing.url + "/v1"]
    finally:
        await well.stop()
        await failing.stop()


def answering(status: int) -> object:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = b'{"error": {"message": "busy", "type": "server_error"}}'
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
