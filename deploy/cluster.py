"""The servers of the cluster mode (``TOLLGATE_CLUSTER=1 make up``): three KRaft nodes and a
Redis Cluster of three masters with a replica each, beside the one PostgreSQL.

Ports come from ``deploy.servers.Ports``: Kafka node i (1 to 3) listens on
``kafka + 100 (i - 1)`` with its controller on ``kafka_controller + 100 (i - 1)``
(19092/19093, 19192/19193, 19292/19293); the Redis nodes on ``redis_cluster`` + 0 to 5
(17000 to 17005, their cluster bus 10000 above). Topics are replicated three times with two
in sync, so one Kafka node may die without a write acknowledged with ``acks=all`` being lost.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.kafka_cluster import KafkaCluster
from deploy.process import is_running, port_open
from deploy.redis_cluster import RedisCluster
from deploy.servers import Ports, StackError

KAFKA_NODES = 3
NODE_PORT_STEP = 100
REDIS_NODES = 6  # three masters, one replica each
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


def cluster_from_env() -> bool:
    """``TOLLGATE_CLUSTER`` set to 1 (or true, yes): run the cluster mode."""
    return os.environ.get("TOLLGATE_CLUSTER", "").strip().lower() in {"1", "true", "yes"}


class ClusterServers:
    """The Kafka cluster and the Redis Cluster under one run folder."""

    def __init__(self, run_dir: Path, ports: Ports) -> None:
        steps = [NODE_PORT_STEP * i for i in range(KAFKA_NODES)]
        self.kafka = KafkaCluster(
            run_dir,
            [ports.kafka + step for step in steps],
            [ports.kafka_controller + step for step in steps],
        )
        self.redis = RedisCluster(run_dir, [ports.redis_cluster + i for i in range(REDIS_NODES)])

    def up(self) -> None:
        """Start what does not run (Redis first: it is quick) and wait until both are whole."""
        for i, port in enumerate(self.redis.ports):
            pid = self.redis.pid(port)
            if (pid is None or not is_running(pid)) and port_open(port):
                raise StackError(
                    f"redis-{i + 1}: port {port} is taken by a process this stack did not start; "
                    "stop it or choose other ports (TOLLGATE_REDIS_CLUSTER_PORT)"
                )
        self.redis.start()
        self.kafka.start()

    def down(self) -> list[int]:
        """Stop every node that runs; the ports that were in use, to check they are free."""
        used = [port for _, pid, port in self.processes() if pid is not None]
        self.kafka.stop()
        self.redis.stop()
        return used

    def running(self) -> bool:
        return any(pid is not None for _, pid, _ in self.processes())

    def processes(self) -> list[tuple[str, int | None, int]]:
        """Name, PID (None when it does not run) and port of each node."""
        out: list[tuple[str, int | None, int]] = []
        for node in self.kafka.nodes:
            pid = self.kafka.pid(node.node_id)
            out.append((f"kafka-{node.node_id}", _live(pid), node.port))
        for i, port in enumerate(self.redis.ports):
            out.append((f"redis-{i + 1}", _live(self.redis.pid(port)), port))
        return out


def _live(pid: int | None) -> int | None:
    return pid if pid is not None and is_running(pid) else None
