"""Each model endpoint's figures on /metrics, read from the fleets at each scrape.

The request path only adds to plain counters on each endpoint (``upstream/fleet.py``); this
collector turns them into series labelled by model and endpoint (base URLs: a bounded set the
operator chose, or the addresses a DNS name gave).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from services.gateway.upstream.fleet import FAILURES, LATENCY_BUCKETS, Fleet

_LABELS = ["model", "upstream_endpoint"]


class FleetCollector(Collector):
    """In flight, health, requests, errors by kind, ejections and time to answer, per endpoint."""

    def __init__(self, fleets: Callable[[], Iterable[Fleet]]) -> None:
        self.fleets = fleets

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "tollgate_gateway_upstream_in_flight",
            "Requests this gateway has in flight at the endpoint",
            labels=_LABELS,
        )
        healthy = GaugeMetricFamily(
            "tollgate_gateway_upstream_healthy",
            "1 while the endpoint takes requests, 0 while it is ejected",
            labels=_LABELS,
        )
        queue = GaugeMetricFamily(
            "tollgate_gateway_upstream_server_queue",
            "Requests running and waiting at the endpoint, as its server last reported them",
            labels=_LABELS,
        )
        requests = CounterMetricFamily(
            "tollgate_gateway_upstream_requests",
            "Attempts sent to the endpoint (a request retried elsewhere counts at each)",
            labels=_LABELS,
        )
        errors = CounterMetricFamily(
            "tollgate_gateway_upstream_errors",
            "The endpoint's failures by kind (connect, timeout, broken, status_5xx, status_429, "
            "probe)",
            labels=[*_LABELS, "kind"],
        )
        ejections = CounterMetricFamily(
            "tollgate_gateway_upstream_ejections",
            "Times the endpoint was ejected",
            labels=_LABELS,
        )
        latency = HistogramMetricFamily(
            "tollgate_gateway_upstream_answer_seconds",
            "From sending to the endpoint to its answer's headers",
            labels=_LABELS,
        )
        for fleet in self.fleets():
            for replica in fleet.replicas:
                labels = [fleet.model, replica.name]
                in_flight.add_metric(labels, replica.in_flight)
                healthy.add_metric(labels, 0 if replica.ejected else 1)
                if fleet.balance == "server_queue":
                    queue.add_metric(labels, replica.queue)
                requests.add_metric(labels, replica.requests)
                ejections.add_metric(labels, replica.ejected_total)
                for kind in FAILURES:
                    errors.add_metric([*labels, kind], replica.errors[kind])
                buckets, running = [], 0
                for bound, count in zip(
                    (*LATENCY_BUCKETS, float("inf")), replica.latency_counts, strict=True
                ):
                    running += count
                    buckets.append((_bound(bound), running))
                latency.add_metric(labels, buckets, replica.latency_sum)
        yield from (in_flight, healthy, queue, requests, errors, ejections, latency)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))
