"""``TOLLGATE_USAGE_PARTITIONS=N make up``: every service that talks to Kafka is given the same
number of usage.events partitions (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import services, system
from deploy.endpoints import Endpoints
from deploy.servers import StackError

pytestmark = pytest.mark.unit

ENDPOINTS = Endpoints("127.0.0.1:1", "postgresql://tollgate:pw@127.0.0.1:2/tollgate", "redis://h:3")


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    for name in ("TOLLGATE_ADMIN_TOKEN", "TOLLGATE_INTERNAL_TOKEN", "TOLLGATE_STATE_MAC_KEYS"):
        monkeypatch.delenv(name, raising=False)


def test_the_partitions_reach_every_kafka_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLGATE_USAGE_PARTITIONS", "12")
    wired = services.wiring(tmp_path / "run", ENDPOINTS)
    given = {
        s.name: system.settings_of(s, wired).get("USAGE_PARTITIONS")
        for s in system.SERVICES
        if s.settings is not None
    }
    kafka_users = {s.name for s in system.SERVICES if "kafka" in s.servers}
    assert kafka_users >= {"gateway", "keys", "metering", "billing"}
    assert {name for name, value in given.items() if value == "12"} == kafka_users


def test_unset_leaves_each_service_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOLLGATE_USAGE_PARTITIONS", raising=False)
    wired = services.wiring(tmp_path / "run", ENDPOINTS)
    assert all("USAGE_PARTITIONS" not in system.settings_of(s, wired) for s in system.SERVICES)


@pytest.mark.parametrize("raw", ["0", "-3", "six", "1025", "2.5"])
def test_a_bad_value_stops_make_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("TOLLGATE_USAGE_PARTITIONS", raw)
    with pytest.raises(StackError, match="TOLLGATE_USAGE_PARTITIONS"):
        services.wiring(tmp_path / "run", ENDPOINTS)
