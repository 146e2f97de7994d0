"""The cheap telemetry test agrees with OpenTelemetry's own getters, provider by provider."""

from __future__ import annotations

import pytest
from opentelemetry import _logs, trace
from opentelemetry import metrics as otel_metrics
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util._once import Once

from services.gateway.telemetry import probe as telemetry_probe

pytestmark = pytest.mark.unit  # no server: `make test-unit`

# Each global the probe reads, the public getter it stands for, and an SDK provider to put in.
_PROVIDERS = [
    (trace, "_TRACER_PROVIDER", trace.get_tracer_provider, TracerProvider),
    (metrics_internal, "_METER_PROVIDER", otel_metrics.get_meter_provider, MeterProvider),
    (logs_internal, "_LOGGER_PROVIDER", _logs.get_logger_provider, LoggerProvider),
]
_PROXIES = (
    trace.ProxyTracerProvider,
    metrics_internal._ProxyMeterProvider,
    logs_internal.ProxyLoggerProvider,
)


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for module, name, _, _ in _PROVIDERS:
        monkeypatch.setattr(module, name, None)
    for variable in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("OTEL_PYTHON_LOGGER_PROVIDER", raising=False)
    return monkeypatch


def test_no_provider_installed_reads_as_unconfigured(unconfigured: pytest.MonkeyPatch) -> None:
    assert not telemetry_probe.configured()
    assert not telemetry_probe.tracing()
    # What the probe reads is what OpenTelemetry's getters answer from: their proxies.
    for (_, _, getter, _), proxy in zip(_PROVIDERS, _PROXIES, strict=True):
        assert type(getter()) is proxy


@pytest.mark.parametrize("index", range(len(_PROVIDERS)))
def test_any_installed_provider_reads_as_configured(
    unconfigured: pytest.MonkeyPatch, index: int
) -> None:
    module, name, getter, sdk = _PROVIDERS[index]
    provider = sdk()
    unconfigured.setattr(module, name, provider)
    assert getter() is provider  # the global the probe reads is the one the API answers with
    assert telemetry_probe.configured()
    assert telemetry_probe.tracing() == (name == "_TRACER_PROVIDER")


def test_a_provider_named_by_the_environment_is_loaded_at_start(
    unconfigured: pytest.MonkeyPatch,
) -> None:
    unconfigured.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())  # else set for good
    unconfigured.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    assert not telemetry_probe.tracing()  # the API loads it on first use only
    telemetry_probe.load_from_environment()
    assert telemetry_probe.tracing()
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
