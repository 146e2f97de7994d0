"""The usage linger: events that come within it travel in one produce request, on real Kafka."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deploy.stack import Endpoints
from services.gateway.settings import GatewaySettings
from services.gateway.telemetry.metrics import Metrics
from services.gateway.usage.emitter import UsageEmitter
from services.gateway.usage.produce_batches import Message
from services.gateway.usage.publisher import Outcome
from services.gateway.usage.spool import Spool
from tests.gateway.harness import usage_events
from tests.gateway.test_spool import usage
from tests.polling import eventually


async def _batches_of(
    endpoints: Endpoints, prefix: str, tmp_path: Path, linger_s: float, spacing_s: float
) -> list[int]:
    """Sizes of the produce calls that carried six events put ``spacing_s`` apart (after a
    first one alone)."""
    emitter = UsageEmitter(
        bootstrap=endpoints.kafka_bootstrap,
        topic_prefix=prefix,
        spool=Spool(tmp_path / "spool"),
        metrics=Metrics(),
        queue_size=1000,
        delivery_timeout_s=5.0,
        linger_s=linger_s,
    )
    sizes: list[int] = []
    publish = emitter.publisher.publish

    async def counted(messages: list[Message]) -> Outcome:
        sizes.append(len(messages))
        return await publish(messages)

    emitter.publisher.publish = counted  # type: ignore[method-assign]
    events = [usage(key_id="key_linger") for _ in range(7)]
    publisher = asyncio.create_task(emitter.run_publisher())
    try:
        # The first publish waits for the producer's start and metadata, which would merge
        # what comes meanwhile: one event first, alone.
        emitter.record(events[0])
        await eventually(
            lambda: asyncio.sleep(0, emitter.pending), until=lambda n: n == 0, what="first"
        )
        for event in events[1:]:
            emitter.record(event)
            await asyncio.sleep(spacing_s)
        landed = await usage_events(endpoints.kafka_bootstrap, prefix, len(events))
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await emitter.close()
    assert {e.event_id for e in landed} == {e.event_id for e in events}
    assert sizes[0] == 1
    return sizes[1:]


async def test_events_within_the_linger_share_one_produce(
    endpoints: Endpoints, topic_prefix: str, tmp_path: Path
) -> None:
    sizes = await _batches_of(endpoints, topic_prefix, tmp_path, linger_s=1.0, spacing_s=0.02)
    assert sizes == [6]


async def test_without_a_linger_spaced_events_travel_alone(
    endpoints: Endpoints, topic_prefix: str, tmp_path: Path
) -> None:
    sizes = await _batches_of(endpoints, topic_prefix, tmp_path, linger_s=0.0, spacing_s=0.2)
    assert sum(sizes) == 6
    assert sizes == [1] * 6


@pytest.mark.unit
def test_the_linger_is_a_setting_bounded_to_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_GATEWAY_INTERNAL_TOKEN", "a-real-token-of-16-chars")
    monkeypatch.setenv("TOLLGATE_GATEWAY_STATE_MAC_KEYS", "k1:a-real-keyring-entry-0123")
    assert GatewaySettings().usage_linger_s == 0.1
    monkeypatch.setenv("TOLLGATE_GATEWAY_USAGE_LINGER_S", "0.02")
    assert GatewaySettings().usage_linger_s == 0.02
    monkeypatch.setenv("TOLLGATE_GATEWAY_USAGE_LINGER_S", "5")
    with pytest.raises(ValueError, match="usage_linger_s"):
        GatewaySettings()
