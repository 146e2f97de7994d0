"""docker-compose.yml without an engine: it parses, every app, port and variable it names
exists in the code, and the shape the operator relies on holds (every service health-checked,
dependencies on health, migrations once, volumes, 127.0.0.1 only). `make compose-test`
(tests/compose/) runs it for real."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from deploy.system import SERVICES

pytestmark = pytest.mark.unit  # no server: `make test-unit`

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _settings_fields(prefix: str) -> set[str]:
    """Environment variable names the settings class with this prefix reads."""
    service = prefix.removeprefix("TOLLGATE_").removesuffix("_").lower()
    module = importlib.import_module(f"services.{service}.settings")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, BaseSettings) and cls.model_config.get("env_prefix") == prefix:
            return {prefix + name.upper() for name in cls.model_fields}
    raise AssertionError(f"no settings class with env_prefix {prefix} in {module.__name__}")


def test_compose_parses_with_healthchecked_servers() -> None:
    services = _compose()["services"]
    for server in ("kafka", "postgres", "redis"):
        assert "healthcheck" in services[server], server
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_every_app_port_and_variable_exists_in_the_code() -> None:
    services = _compose()["services"]
    ports = {s.name: s.port for s in SERVICES}
    catalogue = (REPO / "deploy" / "models.yaml").read_text()
    for name, spec in services.items():
        if "build" not in spec or name == "migrate":
            continue
        app, _, port = spec["command"][0], spec["command"][1], int(spec["command"][2])
        module, _, factory = app.partition(":")
        assert callable(getattr(importlib.import_module(module), factory)), app
        assert port == ports[name], f"{name} listens on {ports[name]} in make up"
        if name != "upstream":
            assert spec["ports"] == [f"127.0.0.1:{port}:{port}"]
        for variable in spec.get("environment", {}):
            if variable.startswith("TOLLGATE_DEMO_"):
                assert "${" + variable in catalogue, variable
                continue
            prefix = "TOLLGATE_" + variable.split("_")[1] + "_"
            assert variable in _settings_fields(prefix), f"{name}: {variable} is read by nothing"


def test_every_service_waits_for_health_and_migrations_run_once() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        if name != "migrate":
            assert "healthcheck" in spec, name
        for port in spec.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert services["migrate"]["entrypoint"] == ["python", "-m", "deploy.migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("keys", "metering", "billing"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
    for name in ("gateway", "console"):
        assert services[name]["depends_on"]["keys"] == {"condition": "service_healthy"}, name
    assert services["upstream"]["profiles"] == ["demo"]
    assert "ports" not in services["upstream"]
    for name, path in (
        ("kafka", "/var/lib/kafka/data"),
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("gateway", "/var/lib/tollgate"),
    ):
        assert any(v.endswith(":" + path) for v in services[name]["volumes"]), name
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_the_local_override_swaps_only_image_names() -> None:
    override = yaml.safe_load((REPO / "docker-compose.local.yml").read_text())
    services = _compose()["services"]
    assert set(override["services"]) == set(services)
    for name, spec in override["services"].items():
        assert list(spec) == ["image"], name
        assert spec["image"].startswith("tollgate-local/"), name
