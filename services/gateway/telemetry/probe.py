"""Whether OpenTelemetry is configured, asked on every proxied request for three reads.

OpenTelemetry's ``get_tracer_provider()`` (and its meter and logger twins) looks an environment
variable up each time while no provider is set: 3 % of a proxied request's CPU when asked on
every request. A provider is set once per process and never unset; the API keeps it in a
module global, read here directly. A provider named by one of those environment variables is
loaded by the API on first use: ``load_from_environment()`` does that once, at start.
"""

from __future__ import annotations

from opentelemetry import _logs, trace
from opentelemetry import metrics as otel_metrics
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal


def load_from_environment() -> None:
    """Install the providers the environment names (``OTEL_PYTHON_*_PROVIDER``), if any."""
    trace.get_tracer_provider()
    otel_metrics.get_meter_provider()
    _logs.get_logger_provider()


def tracing() -> bool:
    """True once a tracer provider is installed (else every span would be a non-recording one)."""
    return trace._TRACER_PROVIDER is not None


def configured() -> bool:
    """True once any provider is installed: FastAPI's own test for adding its telemetry."""
    return (
        trace._TRACER_PROVIDER is not None
        or metrics_internal._METER_PROVIDER is not None
        or logs_internal._LOGGER_PROVIDER is not None
    )
