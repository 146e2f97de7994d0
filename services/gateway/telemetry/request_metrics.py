"""The per-request metrics (requests by status, latency, overhead, key checks) without a lock
per update.

prometheus_client's ``Counter`` and ``Histogram`` take a thread lock on every update, and a
histogram walks its buckets in Python: the request metrics' three updates per request were
3 % of a proxied request's CPU. Every request is counted on the event loop's thread and
``/metrics`` is rendered there too, so plain numbers suffice; a histogram finds its bucket by
bisection. These are collectors of the gateway's registry, exposed exactly as
prometheus_client exposes its own (``_total``, ``_bucket``, ``_count``, ``_sum``,
``_created``, unless ``PROMETHEUS_DISABLE_CREATED_SERIES`` or ``disable_created_metrics()``
turned those off)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import metrics as client_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


def _created_series() -> bool:
    """Whether prometheus_client exposes ``_created`` series now (its own switch)."""
    return bool(client_metrics._use_created)


def _check_labels(name: str, labelnames: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """A new label set must give one value per label name."""
    if len(labels) != len(labelnames):
        raise ValueError(f"{name} takes labels {labelnames}, got {labels}")


class LabelledCounter:
    """A counter by label values; ``name`` without ``_total``, as prometheus_client's."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._counts: dict[tuple[str, ...], list[float]] = {}  # labels: [count, created]

    def inc(self, *labels: str) -> None:
        entry = self._counts.get(labels)
        if entry is None:
            _check_labels(self.name, self.labelnames, labels)
            entry = self._counts[labels] = [0.0, time.time()]
        entry[0] += 1.0

    def value(self, *labels: str) -> float:
        entry = self._counts.get(labels)
        return 0.0 if entry is None else entry[0]

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created_too = _created_series()
        for labels, (count, created) in list(self._counts.items()):
            family.add_metric(labels, count, created=created if created_too else None)
        yield family


@dataclass
class _Series:
    counts: list[int]  # per bucket, not cumulative; the last one is +Inf
    created: float = field(default_factory=time.time)
    total: float = 0.0


class LabelledHistogram:
    """A histogram by label values (none for a plain one): ``le`` buckets, count and sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must increase ({buckets})")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        # prometheus_client's own formatting of ``le`` (an untyped function of its).
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], _Series] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self._series.get(labels)
        if series is None:
            _check_labels(self.name, self.labelnames, labels)
            series = self._series[labels] = _Series([0] * (len(self.bounds) + 1))
        # A value equal to a bound belongs to that bound's bucket (le: less or equal).
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value

    def count(self, *labels: str) -> int:
        series = self._series.get(labels)
        return 0 if series is None else sum(series.counts)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created_too = _created_series()
        for labels, series in list(self._series.items()):
            cumulative, running = [], 0
            for le, count in zip(self._le, series.counts, strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric(labels, cumulative, series.total)
            if created_too:
                named = dict(zip(self.labelnames, labels, strict=True))
                family.samples.append(Sample(self.name + "_created", named, series.created))
        yield family
