"""Free ports for private servers: below the ephemeral range, never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deploy.ports import LOWEST, bindable, ephemeral_floor, free_port

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    floor = ephemeral_floor()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    if floor - LOWEST >= 1000:
        assert all(LOWEST <= port < floor for port in ports)


def test_a_port_someone_listens_on_is_not_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        taken = int(sock.getsockname()[1])
        assert not bindable(taken)
    assert bindable(free_port())


def test_the_ephemeral_floor_is_read_from_the_kernel_with_a_default(tmp_path: Path) -> None:
    table = tmp_path / "ip_local_port_range"
    table.write_text("40000\t60999\n")
    assert ephemeral_floor(table) == 40000
    assert ephemeral_floor(tmp_path / "missing") == 32768
