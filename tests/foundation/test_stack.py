"""The stack's own lifecycle: a second ``up`` reuses, ``down`` leaves no process or port."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.process import is_running, port_open
from deploy.servers import Ports, StackError
from deploy.stack import Endpoints, Stack
from tests.private_servers import private_ports


@pytest.mark.slow
def test_up_reuses_and_down_leaves_nothing(tmp_path: Path, endpoints: object) -> None:
    # Ports of its own, so the session's stack keeps running beside it.
    ports = private_ports()
    stack = Stack(run_dir=tmp_path / "run", ports=ports)
    try:
        stack.up()
        first = stack.status()
        assert all(first.values()), first
        stack.up()
        assert stack.status() == first  # reused, not restarted
    finally:
        stack.down()
    for pid in first.values():
        assert pid is not None
        assert not is_running(pid)
    for port in (ports.kafka, ports.kafka_controller, ports.postgres, ports.redis):
        assert not port_open(port), f"port {port} still open"
    assert all(pid is None for pid in stack.status().values())


def test_port_taken_by_a_stranger_is_a_clear_error(tmp_path: Path, endpoints: Endpoints) -> None:
    # The session's Redis holds its port: a stack in another folder must not adopt it.
    taken = int(endpoints.redis_url.rsplit(":", 1)[1].split("/")[0])
    stack = Stack(run_dir=tmp_path / "run", ports=Ports(postgres=taken))
    with pytest.raises(StackError, match=f"postgres: port {taken} is taken"):
        stack.up()
