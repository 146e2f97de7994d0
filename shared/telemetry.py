"""OpenTelemetry traces and metrics; the exporter is chosen by settings and is off by default."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from shared.settings import ServiceSettings

_configured = False


def setup_telemetry(service: str, settings: ServiceSettings) -> bool:
    """Install tracer and meter providers once per process; False when telemetry is off."""
    global _configured  # noqa: PLW0603 - OpenTelemetry providers are process-wide by design
    if settings.otel_exporter == "none" or _configured:
        return _configured
    resource = Resource.create({"service.name": f"tollgate-{service}"})
    span_exporter: SpanExporter
    reader: MetricReader
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=f"{settings.otel_endpoint}/v1/traces")
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{settings.otel_endpoint}/v1/metrics")
        )
    else:
        span_exporter = ConsoleSpanExporter()
        reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _configured = True
    return True
