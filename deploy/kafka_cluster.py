"""A Kafka cluster on this machine: three KRaft nodes, each a broker and a controller.

The same jars as the single node (``deploy.servers``). Each node has its own broker and
controller port and its own log folder under ``run_dir/kafka-cluster/node-<id>``; the three
controllers are a static three-voter quorum (``controller.quorum.voters``), formatted once
with one cluster id. Internal topics are replicated three times with two in sync, so the
cluster keeps accepting ``acks=all`` writes with one node down. ``kill`` SIGKILLs one node as
a crash would; ``start_node`` brings it back with its data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.private import write_private
from deploy.process import (
    is_running,
    port_open,
    read_pid,
    run_to_end,
    spawn_detached,
    stop_pid,
    tail,
)
from deploy.servers import StackError, fetch_kafka, kafka_java
from shared.kafka_security import KafkaAccess, kafka_options

HEAP = "512m"  # three JVMs share the machine with everything else


@dataclass(frozen=True)
class KafkaNode:
    """One node's id and ports on 127.0.0.1."""

    node_id: int
    port: int
    controller_port: int


class KafkaCluster:
    """Three (or more) KRaft nodes on the given ports, under ``run_dir/kafka-cluster``."""

    name = "kafka-cluster"

    def __init__(self, run_dir: Path, ports: list[int], controller_ports: list[int]) -> None:
        if len(ports) != len(controller_ports) or len(ports) < 3:
            raise ValueError("a cluster needs at least 3 nodes, each with a controller port")
        self.home = run_dir / "kafka-cluster"
        self.nodes = [
            KafkaNode(i + 1, port, ctl)
            for i, (port, ctl) in enumerate(zip(ports, controller_ports, strict=True))
        ]
        self.log = self.home / "node-1" / "kafka.log"

    @property
    def bootstrap(self) -> str:
        """Every broker, so a client finds the cluster with any one node down."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def node_dir(self, node_id: int) -> Path:
        return self.home / f"node-{node_id}"

    def node_log(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.log"

    def pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def pid(self, node_id: int = 1) -> int | None:
        return read_pid(self.pid_file(node_id))

    def running(self, node_id: int) -> bool:
        pid = self.pid(node_id)
        return pid is not None and is_running(pid)

    def _listener_lines(self, node: KafkaNode) -> list[str]:
        """A node's listeners (the secured cluster's: SASL_SSL, deploy/secure.py)."""
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]

    def _config(self, node: KafkaNode) -> Path:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = min(3, len(self.nodes))
        config = self.node_dir(node.node_id) / "server.properties"
        # 0600: the secured cluster's listeners carry its administrator's password.
        write_private(
            config,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={node.node_id}",
                    f"controller.quorum.voters={voters}",
                    *self._listener_lines(node),
                    f"log.dirs={self.node_dir(node.node_id) / 'data'}",
                    "num.partitions=3",
                    f"default.replication.factor={replicas}",
                    f"min.insync.replicas={replicas - 1}",
                    f"offsets.topic.replication.factor={replicas}",
                    "offsets.topic.num.partitions=10",
                    f"transaction.state.log.replication.factor={replicas}",
                    f"transaction.state.log.min.isr={replicas - 1}",
                    f"share.coordinator.state.topic.replication.factor={replicas}",
                    f"share.coordinator.state.topic.min.isr={replicas - 1}",
                    "unclean.leader.election.enable=false",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            ),
        )
        return config

    def _format_args(self) -> list[str]:
        """More arguments of each node's storage format (the secured cluster's SCRAM users)."""
        return []

    @property
    def client(self) -> str | KafkaAccess:
        """How the stack's own admin client connects (the secured cluster: as the administrator)."""
        return self.bootstrap

    def _cluster_id(self) -> str:
        """One id for every node, made the first time and kept beside them."""
        record = self.home / "cluster-id"
        if not record.exists():
            made = subprocess.run(
                kafka_java("kafka.tools.StorageTool", "random-uuid", heap="256m"),
                capture_output=True,
                text=True,
                check=True,
            )
            record.write_text(made.stdout.split()[-1] + "\n")
        return record.read_text().strip()

    def _format(self, node: KafkaNode, config: Path) -> None:
        if (self.node_dir(node.node_id) / "data" / "meta.properties").exists():
            return
        formatted = subprocess.run(
            kafka_java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self._cluster_id(),
                "-c",
                str(config),
                *self._format_args(),
                heap="256m",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise StackError(
                f"formatting Kafka node {node.node_id} failed: {formatted.stdout[-2000:]}"
                f"{formatted.stderr[-2000:]}"
            )

    def start(self, timeout: float = 120.0) -> None:
        """Start every node that is not running; wait until all brokers are in the metadata."""
        fetch_kafka()
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        self.wait_brokers(timeout)

    def start_node(self, node_id: int, *, wait: bool = True, timeout: float = 90.0) -> None:
        """Start one node (formatting its folder the first time); by default wait until the
        cluster lists every broker again."""
        if self.running(node_id):
            return
        node = self.node(node_id)
        for port in (node.port, node.controller_port):
            if port_open(port):
                raise StackError(f"kafka node {node_id}: port {port} is taken by another process")
        self.node_dir(node_id).mkdir(parents=True, exist_ok=True)
        config = self._config(node)
        self._format(node, config)
        pid = spawn_detached(
            kafka_java("kafka.Kafka", str(config), heap=HEAP), self.node_log(node_id)
        )
        self.pid_file(node_id).write_text(str(pid))
        if wait:
            self.wait_brokers(timeout)

    def stop(self) -> None:
        """SIGTERM every node at once: stopped one by one, the last would wait for a quorum
        that has already gone before it gives up its controlled shutdown."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self.stop_node, [n.node_id for n in self.nodes]))

    def stop_node(self, node_id: int) -> None:
        stop_pid(self.pid_file(node_id), signal.SIGTERM, timeout=30)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (no controlled shutdown, no leader hand-off)."""
        stop_pid(self.pid_file(node_id), signal.SIGKILL, timeout=10)

    def brokers(self) -> set[int]:
        """Node ids of the brokers the cluster's metadata lists now (empty when unreachable)."""
        return run_to_end(_brokers(self.client))

    def wait_brokers(self, timeout: float = 120.0) -> None:
        """Until every node runs and is a broker in the metadata."""
        deadline = time.monotonic() + timeout
        want = {n.node_id for n in self.nodes}
        while time.monotonic() < deadline:
            dead = [n.node_id for n in self.nodes if not self.running(n.node_id)]
            if dead:
                raise StackError(
                    f"kafka node {dead[0]} exited; its log is {self.node_log(dead[0])}:\n"
                    f"{tail(self.node_log(dead[0]))}"
                )
            if self.brokers() >= want:
                return
            time.sleep(0.5)
        raise StackError(
            f"the Kafka cluster did not list brokers {sorted(want)} within {timeout:.0f}s; "
            f"logs under {self.home}:\n{tail(self.log)}"
        )

    def active_controller(self, timeout: float = 60.0) -> int:
        """Node id of the quorum's leader, the active controller (from the quorum tool); asked
        again until the deadline while the quorum has no leader (an election after a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._ask_quorum()
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _ask_quorum(self) -> int:
        live = [n for n in self.nodes if self.running(n.node_id)]
        if not live:
            raise StackError("no node of the Kafka cluster runs")
        controllers = ",".join(f"127.0.0.1:{n.controller_port}" for n in live)
        done = subprocess.run(
            kafka_java(
                "org.apache.kafka.tools.MetadataQuorumCommand",
                "--bootstrap-controller",
                controllers,
                "describe",
                "--status",
                heap="256m",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        found = re.search(r"^LeaderId:\s+(\d+)", done.stdout, re.MULTILINE)
        if done.returncode != 0 or found is None:
            raise StackError(f"the quorum tool failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        return int(found.group(1))


async def _brokers(bootstrap: str | KafkaAccess) -> set[int]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        described = await asyncio.wait_for(admin.describe_cluster(), 5)
    except (KafkaError, OSError, TimeoutError):
        return set()
    finally:
        await admin.close()
    return {int(b["node_id"]) for b in described.get("brokers", [])}
