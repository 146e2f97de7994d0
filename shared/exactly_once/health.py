"""Liveness, readiness and Prometheus metrics of a ledger service (metering, billing).

``/readyz`` answers 503 when the database does not answer, when the consumer stopped, and
when it is *stalled*: records wait (lag > 0) and no batch committed for ``stall_after_s``
(shared/exactly_once/progress.py), whatever the cause (a table gone, a permission revoked).
Its body and ``/metrics`` show the consumer's lag, the age of its last committed batch,
dead letters sent and lost, and the stalled flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.exactly_once.retry import READ_ERRORS
from shared.http import liveness_router

health_router = liveness_router()


@health_router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """The database answers and the consumer (when this process runs one) makes progress."""
    consumer = request.app.state.consumer
    stats = consumer.health() if consumer is not None else {}
    status, code = "ok", 200
    try:
        await request.app.state.pool.fetchval("SELECT 1")
    except READ_ERRORS:
        status, code = "database unavailable", 503
    if consumer is not None and not consumer.running:
        status, code = "consumer stopped", 503
    elif stats.get("stalled"):
        status, code = "consumer stalled", 503
    # Admin keys' follower is reported, never a reason for 503: the operator token still works.
    admin_keys = getattr(request.app.state, "admin_keys", None)
    followed = admin_keys.stats() if admin_keys is not None else {}
    return JSONResponse({"status": status, **stats, **followed}, status_code=code)


class _ConsumerCollector(Collector):
    """The consumer's health, read when scraped (its own registry: apps in a test coexist)."""

    def __init__(self, group: str, health: dict[str, Any]) -> None:
        self.group = group
        self.health = health

    def collect(self) -> Iterator[Metric]:
        h, labels = self.health, [self.group]

        def gauge(name: str, doc: str, value: float) -> Metric:
            m = GaugeMetricFamily(f"tollgate_consumer_{name}", doc, labels=["group"])
            m.add_metric(labels, value)
            return m

        def counter(name: str, doc: str, value: float) -> Metric:
            m = CounterMetricFamily(f"tollgate_consumer_{name}", doc, labels=["group"])
            m.add_metric(labels, value)
            return m

        yield gauge("lag", "Records on assigned partitions not committed yet", h["lag"])
        age = h["last_commit_age_s"]
        yield gauge(
            "last_commit_age_seconds",
            "Seconds since the last committed batch (-1 before the first)",
            -1.0 if age is None else age,
        )
        yield gauge("stalled", "1 when records wait and nothing commits", int(h["stalled"]))
        yield gauge("partitions", "Partitions assigned", len(h["partitions"]))
        yield counter("batches", "Batches committed", h["batches"])
        yield counter("events_applied", "Events applied to the ledgers", h["applied"])
        yield counter("duplicates", "Events dropped as already counted", h["duplicates"])
        yield counter(
            "dead_letters", "Dead letters acknowledged by the DLQ topic", h["dead_letters"]
        )
        yield counter("refused", "Records the database refused (dead-lettered)", h["refused"])
        yield counter(
            "dead_letters_lost", "Dead letters the broker refused for good", h["dead_letters_lost"]
        )
        yield counter("db_retries", "Batch transactions retried", h["db_retries"])


@health_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text: the consumer's lag, last commit age, dead letters, stalled."""
    registry = CollectorRegistry()
    consumer = request.app.state.consumer
    if consumer is not None:
        registry.register(_ConsumerCollector(consumer.config.group_id, consumer.health()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
