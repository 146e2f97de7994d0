"""The spool on the real Kafka: records refused for good are quarantined, never a wedge; the
bound stops admission instead of dropping usage; /readyz and /metrics show the figures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack import Endpoints
from services.gateway.telemetry.metrics import Metrics
from services.gateway.usage.emitter import UsageEmitter
from services.gateway.usage.spool import Spool
from shared.kafka import ensure_topics
from shared.topics import KEYS_EVENTS, TOPICS, USAGE_EVENTS, TopicSpec
from tests.gateway.conftest import StartGateway
from tests.gateway.harness import CHAT, FakeKeyService, new_key, upstream_requests, usage_events
from tests.gateway.test_spool import usage
from tests.polling import eventually
from tests.private_servers import Private
from tests.served import Served

SMALL = 2048  # the test topic's max.message.bytes: one event fits, a batch of them may not
BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _small_topics() -> list[TopicSpec]:
    keys = next(t for t in TOPICS if t.name == KEYS_EVENTS)
    return [keys, TopicSpec(USAGE_EVENTS, 3, {"max.message.bytes": str(SMALL)})]


@pytest.fixture
async def small_prefix(endpoints: Endpoints, unique: str) -> AsyncIterator[str]:
    """Topics of this test whose usage.events refuses records above SMALL bytes."""
    prefix = f"test-{unique}-small."
    await ensure_topics(endpoints.kafka_bootstrap, _small_topics(), prefix=prefix)
    yield prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([prefix + t.name for t in _small_topics()])
    finally:
        await admin.close()


# 20 go record by record; 200 as batches built per partition
# (services/gateway/usage/produce_batches.py)
@pytest.mark.parametrize("count", [20, 200])
async def test_a_record_kafka_refuses_is_quarantined_and_the_rest_delivered(
    endpoints: Endpoints, small_prefix: str, tmp_path: Path, count: int
) -> None:
    spool = Spool(tmp_path / "spool")
    emitter = UsageEmitter(
        bootstrap=endpoints.kafka_bootstrap,
        topic_prefix=small_prefix,
        spool=spool,
        metrics=Metrics(),
        queue_size=1000,
        delivery_timeout_s=5.0,
    )
    good = [usage(key_id=f"key_{i % 4}") for i in range(count)]
    broker_refuses = usage(key_id="key_1", model="m" * (2 * SMALL)).to_bytes()
    client_refuses = usage(key_id="key_2", model="m" * 1_100_000).to_bytes()  # > 1 MiB
    batch = [(e.key_id.encode(), e.to_bytes()) for e in good]
    batch.insert(7, (b"key_1", broker_refuses))
    batch.insert(13, (b"key_2", client_refuses))
    for message in batch:  # one batch: the publisher takes up to 500 at once
        emitter.queue.put_nowait(message)
    publisher = asyncio.create_task(emitter.run_publisher())
    try:
        await eventually(
            lambda: asyncio.sleep(0, spool.quarantine.count),
            until=lambda n: n == 2,
            timeout=30,
            what="two records quarantined",
        )
        events = await usage_events(endpoints.kafka_bootstrap, small_prefix, len(good))
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await emitter.close()
    assert {e.event_id for e in events} == {e.event_id for e in good}, "and nothing else"
    entries = spool.quarantine.entries()
    assert {e["size"] for e in entries} == {len(broker_refuses), len(client_refuses)}
    assert all(str(e["reason"]).startswith("MessageSizeTooLargeError") for e in entries)
    assert {e["record"] for e in entries} == {broker_refuses.decode(), client_refuses.decode()}
    assert spool.depth == 0, "nothing of that batch went to the spool"
    assert not spool.segments()
    rendered = emitter.metrics.render().decode()
    assert "tollgate_gateway_usage_quarantined 2.0" in rendered
    assert 'tollgate_gateway_usage_events_total{outcome="quarantined"} 2.0' in rendered
    assert f'tollgate_gateway_usage_events_total{{outcome="published"}} {count}.0' in rendered


async def _figures(client: httpx.AsyncClient, url: str) -> tuple[int, dict[str, Any]]:
    answer = await client.get(url + "/readyz")
    return answer.status_code, answer.json()


def _metric(rendered: str, name: str) -> float:
    for line in rendered.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_replay_quarantines_bad_lines_and_goes_on_with_later_segments(
    make_gateway: StartGateway, endpoints: Endpoints, small_prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    good = [usage(key_id=f"key_{i}") for i in range(4)]
    oversized = usage(key_id="key_9", model="m" * (2 * SMALL)).to_bytes()
    bad = [
        b"{this is not json",
        good[0].to_bytes()[:60],  # truncated
        json.dumps({"event_id": "e", "model": "no key id"}).encode(),
        oversized,
    ]
    older = [good[0].to_bytes(), bad[0], bad[1], good[1].to_bytes(), bad[2], bad[3]]
    (folder / "00000000000000000001-aaaaaaaa.jsonl").write_bytes(b"\n".join(older) + b"\n")
    later = [good[2].to_bytes(), good[3].to_bytes()]
    (folder / "00000000000000000002-bbbbbbbb.jsonl").write_bytes(b"\n".join(later) + b"\n")
    gateway = await make_gateway(prefix=small_prefix, spool=folder)
    async with httpx.AsyncClient() as client:
        _, checks = await eventually(
            lambda: _figures(client, gateway.url),
            until=lambda f: f[1]["spool_depth"] == 0 and f[1]["quarantined"] == 4,
            timeout=30,
            what="spool replayed",
        )
        assert checks["spool_bytes"] > 0, "the quarantine counts against the bound"
        rendered = (await client.get(gateway.url + "/metrics")).text
    events = await usage_events(endpoints.kafka_bootstrap, small_prefix, 4)
    assert {e.event_id for e in events} == {e.event_id for e in good}
    assert not list(folder.glob("*.jsonl")), "spool empty"
    entries = Spool(folder).quarantine.entries()
    reasons = {str(e.get("record")): str(e["reason"]) for e in entries}
    assert reasons[bad[0].decode()].startswith("not JSON")
    assert reasons[bad[1].decode()].startswith("not JSON")
    assert reasons[bad[2].decode()] == "no usable key_id"
    assert reasons[oversized.decode()].startswith("MessageSizeTooLargeError")
    assert _metric(rendered, "tollgate_gateway_usage_quarantined") == 4
    assert _metric(rendered, "tollgate_gateway_spool_depth") == 0
    assert _metric(rendered, "tollgate_gateway_spool_bytes") == checks["spool_bytes"]


@pytest.mark.slow
async def test_a_full_spool_refuses_metered_requests_and_loses_no_usage(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    private_kafka: Private,
    topic_prefix: str,
    upstream: Served,
    tmp_path: Path,
) -> None:
    bootstrap = private_kafka.kafka_bootstrap
    await ensure_topics(bootstrap, prefix=topic_prefix)
    bound = 6 * len(usage().to_bytes())  # a handful of events
    gateway = await make_gateway(
        kafka=bootstrap,
        spool=tmp_path / "spool",
        spool_max_bytes=bound,
        kafka_delivery_timeout_s=1.0,
    )
    secret, state = new_key()
    keyservice[0].add(state)
    headers = {"Authorization": f"Bearer {secret}"}
    served: list[str] = []
    async with httpx.AsyncClient() as client:

        async def call() -> httpx.Response:
            answer = await client.post(
                gateway.url + "/v1/chat/completions", json=BODY, headers=headers
            )
            if answer.status_code == 200:
                served.append(answer.headers["x-request-id"])
            return answer

        assert (await call()).status_code == 200
        await private_kafka.astop()
        refused = await eventually(
            call, until=lambda a: a.status_code == 503, timeout=60, interval=0.02, what="503"
        )
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert "usage" in refused.json()["error"]["message"].lower()
        assert refused.headers["retry-after"] == "1"
        before = await upstream_requests(upstream.url)
        assert (await call()).status_code == 503
        assert await upstream_requests(upstream.url) == before, "refused before the upstream"
        status, checks = await _figures(client, gateway.url)
        assert status == 503, "not ready: a balancer sends traffic to another replica"
        assert checks["usage_accepting"] is False
        assert checks["status"] == "usage_unavailable"
        assert 0 < checks["spool_bytes"] <= bound, "the bound held"
        assert checks["usage_pending"] > 0, "the rest waits in memory"
        rendered = (await client.get(gateway.url + "/metrics")).text
        assert _metric(rendered, "tollgate_gateway_usage_accepting") == 0
        assert _metric(rendered, "tollgate_gateway_spool_max_bytes") == bound
        await private_kafka.astart()
        await eventually(
            lambda: _figures(client, gateway.url),
            until=lambda f: f[0] == 200 and f[1]["spool_depth"] == 0,
            timeout=60,
            what="spool replayed and admission back",
        )
        assert (await call()).status_code == 200
    events = await usage_events(bootstrap, topic_prefix, len(served), timeout=30)
    assert sorted(e.request_id for e in events) == sorted(served), "every served request, once"
