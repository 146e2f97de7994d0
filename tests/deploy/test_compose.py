"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked:
it parses, and every app, port and variable it names exists in the code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from deploy.system import SERVICES

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
        if "build" not in spec:
            continue
        app, _, port = spec["command"][0], spec["command"][1], int(spec["command"][2])
        module, _, factory = app.partition(":")
        assert callable(getattr(importlib.import_module(module), factory)), app
        assert port == ports[name], f"{name} listens on {ports[name]} in make up"
        assert spec["ports"] == [f"{port}:{port}"]
        for variable in spec.get("environment", {}):
            if variable.startswith("TOLLGATE_DEMO_"):
                assert "${" + variable in catalogue, variable
                continue
            prefix = "TOLLGATE_" + variable.split("_")[1] + "_"
            assert variable in _settings_fields(prefix), f"{name}: {variable} is read by nothing"
