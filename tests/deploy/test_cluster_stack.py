"""``TOLLGATE_CLUSTER=1 make up`` as the command line runs it, on ports and a run folder of its
own beside the dev stack: every node and replica runs and is listed, both gateways serve the
first key, the services created their topics replicated 3 with 2 in sync, and ``down`` leaves
no process and no port behind."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deploy import services
from deploy.cluster import ClusterServers
from deploy.kafka_cluster import KafkaCluster
from deploy.process import is_running, port_open
from deploy.servers import REPO, Ports
from shared.topics import USAGE_EVENTS

NODES = ["kafka-1", "kafka-2", "kafka-3", *(f"redis-{i}" for i in range(1, 7))]
REPLICAS = ["gateway", "gateway-1", "metering", "metering-1", "billing", "billing-1"]


def _layout() -> tuple[Ports, int, list[int]]:
    """Ports below the ephemeral range (no client connection takes one meanwhile), all free:
    Kafka nodes on base, +100, +200 (controllers one above), PostgreSQL base+2, the Redis
    Cluster base+4 to base+9 (bus 10000 above), the services from base+400."""
    for _ in range(50):
        base = random.randrange(10_000, 20_000, 10)
        ports = Ports(base, base + 1, base + 2, base + 3, base + 4)
        offset = base + 400 - services.GATEWAY_PORT
        kafka = ClusterServers(Path("/nonexistent"), ports)
        used = [ports.postgres, *kafka.redis.ports, *kafka.redis.bus_ports.values()]
        used += [p for n in kafka.kafka.nodes for p in (n.port, n.controller_port)]
        scale = dict.fromkeys(services.SCALED, 2)
        used += [s.port for s in services.layout(scale, offset)]
        if not any(port_open(p) for p in used):
            return ports, offset, used
    raise AssertionError("no free ports for a cluster stack")


def _cli(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.stack", command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _listed(shown: str) -> dict[str, tuple[int | None, int]]:
    out: dict[str, tuple[int | None, int]] = {}
    for line in shown.splitlines():
        found = re.match(r"(\S+)\s+(?:running, pid (\d+)|stopped)\s+port (\d+)$", line)
        if found:
            pid = int(found.group(2)) if found.group(2) else None
            out[found.group(1)] = (pid, int(found.group(3)))
    return out


@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_mode_up_status_down(tmp_path: Path) -> None:
    ports, offset, used = _layout()
    run_dir = tmp_path / "run"
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_REPLICAS")},
        "TOLLGATE_CLUSTER": "1",
        "TOLLGATE_RUN_DIR": str(run_dir),
        "TOLLGATE_KAFKA_PORT": str(ports.kafka),
        "TOLLGATE_KAFKA_CONTROLLER_PORT": str(ports.kafka_controller),
        "TOLLGATE_POSTGRES_PORT": str(ports.postgres),
        "TOLLGATE_REDIS_PORT": str(ports.redis),
        "TOLLGATE_REDIS_CLUSTER_PORT": str(ports.redis_cluster),
        "TOLLGATE_SERVICES_PORT_OFFSET": str(offset),
    }
    listed: dict[str, tuple[int | None, int]] = {}
    try:
        shown = _cli("up", env)
        key = re.search(r"first key\s+(sk-\S+)", shown)
        assert key, shown

        listed = _listed(_cli("status", env))
        for name in ["postgres", *NODES, *REPLICAS, "keys", "console"]:
            assert listed.get(name, (None, 0))[0] is not None, f"{name} is not running: {listed}"
        assert "kafka" not in listed  # the single node does not run beside the cluster
        assert listed["kafka-2"][1] == ports.kafka + 100
        assert listed["gateway-1"][1] == 8180 + offset
        assert listed["billing-1"][1] == 8183 + offset

        # Both gateways serve the first key, on the Redis Cluster and the three brokers.
        for name in ("gateway", "gateway-1"):
            answer = httpx.post(
                f"http://127.0.0.1:{listed[name][1]}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key.group(1)}"},
                json={
                    "model": "Qwen/Qwen2.5-0.5B-Instruct",
                    "messages": [{"role": "user", "content": "Hi"}],
                },
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        cluster = KafkaCluster(
            run_dir,
            [ports.kafka + 100 * i for i in range(3)],
            [ports.kafka_controller + 100 * i for i in range(3)],
        )
        assert cluster.brokers() == {1, 2, 3}
        described = subprocess.run(
            [sys.executable, "-c", _DESCRIBE, cluster.bootstrap, USAGE_EVENTS],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        assert described == ["3", "2"], described  # replicas of each partition, min ISR

        _cli("down", env)
        stopped = _listed(_cli("status", env))
        assert all(pid is None for pid, _ in stopped.values()), stopped
    finally:
        subprocess.run(
            [sys.executable, "-m", "deploy.stack", "down"], env=env, cwd=REPO, check=False
        )
    for name, (pid, _) in listed.items():
        assert pid is None or not is_running(pid), f"{name} still runs"
    busy = [p for p in used if port_open(p)]
    assert not busy, f"ports still open after down: {busy}"


# Replication factors of a topic's partitions and its min.insync.replicas, in a process of
# its own (the test itself has no event loop).
_DESCRIBE = """
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1])
    await admin.start()
    try:
        topic = (await admin.describe_topics([sys.argv[2]]))[0]
        resource = ConfigResource(ConfigResourceType.TOPIC, sys.argv[2])
        configs = await admin.describe_configs([resource])
    finally:
        await admin.close()
    factors = {len(p["replicas"]) for p in topic["partitions"]}
    entries = {e[0]: e[1] for a in configs for r in a.resources for e in r[4]}
    print(*sorted(factors), entries["min.insync.replicas"])
asyncio.run(main())
"""


@pytest.mark.unit
def test_cluster_mode_scales_gateway_metering_billing(monkeypatch: pytest.MonkeyPatch) -> None:
    for base in services.SCALED:
        monkeypatch.delenv(f"TOLLGATE_{base.upper()}_REPLICAS", raising=False)
    assert services.scale_from_env() == {"gateway": 1, "metering": 1, "billing": 1}
    scale = services.scale_from_env(cluster=True)
    assert scale == {"gateway": 2, "metering": 2, "billing": 2}
    monkeypatch.setenv("TOLLGATE_BILLING_REPLICAS", "3")
    assert services.scale_from_env(cluster=True)["billing"] == 3
    ports = {s.name: s.port for s in services.layout(scale)}
    assert ports == {
        "upstream": 8090,
        "keys": 8081,
        "metering": 8082,
        "metering-1": 8182,
        "billing": 8083,
        "billing-1": 8183,
        "gateway": 8080,
        "gateway-1": 8180,
        "console": 8084,
    }
    # The single-node layout is as it always was.
    assert [s.port for s in services.layout(1)] == [8090, 8081, 8082, 8083, 8080, 8084]
