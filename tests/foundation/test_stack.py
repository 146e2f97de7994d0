"""The stack's own lifecycle: a second ``up`` reuses, ``down`` leaves no process or port, and
the gateway runs as several replicas that ``status`` and ``down`` know."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deploy import services, system
from deploy.process import is_running, port_open
from deploy.servers import REPO, Ports, StackError
from deploy.stack import Endpoints, Stack
from tests.private_servers import private_ports


def _free_offset(replicas: int) -> int:
    """A port offset at which every service of the layout finds its port free (below the
    ephemeral range, so no free_port() of another test can take one meanwhile)."""
    for _ in range(50):
        offset = random.randrange(10_000, 22_000)
        if not any(port_open(s.port) for s in services.layout(replicas, offset)):
            return offset
    raise AssertionError("no free port offset for the services")


def _cli(command: str, run_dir: Path, ports: Ports) -> str:
    """``make <command>`` for this stack: the same module, its folder and ports from the
    environment, one gateway replica asked for."""
    env = {
        **os.environ,
        "TOLLGATE_RUN_DIR": str(run_dir),
        "TOLLGATE_GATEWAY_REPLICAS": "1",
        "TOLLGATE_KAFKA_PORT": str(ports.kafka),
        "TOLLGATE_KAFKA_CONTROLLER_PORT": str(ports.kafka_controller),
        "TOLLGATE_POSTGRES_PORT": str(ports.postgres),
        "TOLLGATE_REDIS_PORT": str(ports.redis),
    }
    done = subprocess.run(
        [sys.executable, "-m", "deploy.stack", command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_up_reuses_and_down_leaves_nothing(tmp_path: Path, endpoints: object) -> None:
    # Ports of its own, so the session's stack keeps running beside it.
    ports = private_ports()
    run_dir = tmp_path / "run"
    stack = Stack(run_dir=run_dir, ports=ports)
    offset = _free_offset(2)
    try:
        stack.up()
        first = stack.status()
        assert all(first.values()), first
        stack.up()
        assert stack.status() == first  # reused, not restarted

        # Two gateway replicas, on 8080 and 8180 (moved by the offset), each its own spool.
        services.up(run_dir, stack.endpoints(), replicas=2, port_offset=offset)
        for port in (8080 + offset, 8180 + offset):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert (run_dir / "spool").is_dir()
        assert (run_dir / "spool-1").is_dir()
        for name in ("gateway", "gateway-1"):
            assert "gateway started" in (run_dir / "services" / f"{name}.log").read_text()
        running = services.status(run_dir, replicas=2)
        assert running["gateway"] is not None, running
        assert running["gateway-1"] not in (None, running["gateway"]), running
        first.update(running)

        # `make status` with the default of one replica still lists the second one...
        shown = _cli("status", run_dir, ports)
        assert f"gateway-1  running, pid {running['gateway-1']}" in shown, shown
        # ...and `make down` stops it with everything else.
        _cli("down", run_dir, ports)
    finally:
        services.down(run_dir)
        stack.down()
    for name, pid in first.items():
        assert pid is not None
        assert not is_running(pid), f"{name} still runs"
    for port in (ports.kafka, ports.kafka_controller, ports.postgres, ports.redis):
        assert not port_open(port), f"port {port} still open"
    for port in (8080 + offset, 8180 + offset):
        assert not port_open(port), f"gateway port {port} still open"
    assert all(pid is None for pid in stack.status().values())
    assert all(pid is None for pid in services.status(run_dir, replicas=2).values())


@pytest.mark.unit
def test_replica_layout_ports_and_names() -> None:
    layout = {s.name: s for s in services.layout(3)}
    assert [layout[n].port for n in ("gateway", "gateway-1", "gateway-2")] == [8080, 8180, 8280]
    assert layout["keys"].port == 8081
    assert "gateway-3" not in layout
    assert system.spool_dir(Path("/r"), 0) == Path("/r/spool")
    assert system.spool_dir(Path("/r"), 2) == Path("/r/spool-2")


@pytest.mark.parametrize("value", ["0", "-1", "x", str(services.MAX_REPLICAS + 1)])
@pytest.mark.unit
def test_a_bad_replica_count_is_a_clear_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_GATEWAY_REPLICAS", value)
    with pytest.raises(StackError, match="TOLLGATE_GATEWAY_REPLICAS must be 1 to"):
        services.replicas_from_env()


def test_port_taken_by_a_stranger_is_a_clear_error(tmp_path: Path, endpoints: Endpoints) -> None:
    # The session's Redis holds its port: a stack in another folder must not adopt it.
    taken = int(endpoints.redis_url.rsplit(":", 1)[1].split("/")[0])
    stack = Stack(run_dir=tmp_path / "run", ports=Ports(postgres=taken))
    with pytest.raises(StackError, match=f"postgres: port {taken} is taken"):
        stack.up()
