"""The system's one description (deploy/system.py), which make up and the test harnesses run:
every setting it hands a service is one that service reads, and every service starts after
the ones it calls."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from deploy.endpoints import Endpoints
from deploy.system import SERVICES, Isolation, Service, Wiring, environment, settings_of

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def _settings_class(service: Service) -> type[BaseSettings]:
    assert service.settings is not None
    module, _, name = service.settings.partition(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    assert issubclass(cls, BaseSettings)
    return cls


def _everything(tmp: Path) -> Wiring:
    """A wiring that gives what any service may be given: clusters, a test's own data."""
    return Wiring(
        Endpoints("k:9092", "postgresql://u@h/db", "redis://h:6379/0", cluster=True),
        urls={s.name: f"http://{s.name}" for s in SERVICES},
        admin_token="admin-" + "x" * 20,
        internal_token="internal-" + "x" * 20,
        spools=tmp,
        isolation=Isolation("t.", {"keys": "k", "metering": "m", "billing": "b"}, "u", "r:"),
    )


@pytest.mark.parametrize("service", [s for s in SERVICES if s.settings], ids=lambda s: s.name)
def test_every_setting_given_is_read_by_the_service(service: Service, tmp_path: Path) -> None:
    cls = _settings_class(service)
    assert cls.model_config.get("env_prefix") == service.prefix
    read = {service.prefix + name.upper() for name in cls.model_fields}
    given = environment(service, settings_of(service, _everything(tmp_path)))
    assert set(given) <= read, f"{service.name} reads none of {sorted(set(given) - read)}"
    # And the values are ones it accepts.
    cls.model_validate({k.removeprefix(service.prefix).lower(): v for k, v in given.items()})


def test_each_app_exists_and_starts_after_the_services_it_calls() -> None:
    order = [s.name for s in SERVICES]
    for service in SERVICES:
        module, _, factory = service.app.partition(":")
        assert callable(getattr(importlib.import_module(module), factory)), service.app
        for peer in service.peers:
            assert peer in order, f"{service.name} calls {peer}, which is not in the system"
            assert order.index(peer) < order.index(service.name), f"{service.name} before {peer}"
    assert len(set(order)) == len(order)
    assert len({s.port for s in SERVICES}) == len(SERVICES)
