"""Spans carry the key id and model, never the secret."""

from __future__ import annotations

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.gateway.harness import CHAT, FakeKeyService, new_key
from tests.served import Served


def _exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the process's SDK tracer provider (installed if none is)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_request_span_is_tagged_with_the_key_id_not_the_secret(
    gateway: Served, keyservice: tuple[FakeKeyService, Served]
) -> None:
    exporter = _exporter()
    secret, state = new_key()
    keyservice[0].add(state)
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            gateway.url + "/v1/chat/completions",
            json={"model": CHAT, "messages": [{"role": "user", "content": "trace me"}]},
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert answer.status_code == 200
    spans = [s for s in exporter.get_finished_spans() if s.name == "gateway /v1/chat/completions"]
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    attributes = dict(spans[0].attributes or {})
    assert attributes["tollgate.key_id"] == state.key_id
    assert attributes["tollgate.project_id"] == state.project_id
    assert attributes["tollgate.model"] == CHAT
    assert all(secret not in str(value) for value in attributes.values())
    exporter.shutdown()
