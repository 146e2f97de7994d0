"""A Redis Cluster on this machine: masters and their replicas as local redis-server processes.

From Debian's redis-server, as the single node is. Each node has its own port and folder;
``start()`` starts them all and, the first time, joins them into a cluster with
``redis-cli --cluster create`` (one replica per master by default) and waits until every node
reports the cluster ``ok`` with all 16,384 slots served. A short ``cluster-node-timeout``
lets a replica take over within seconds when its master dies.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy.process import is_running, read_pid, spawn_detached, stop_pid
from deploy.servers import REDIS_OPTIONS, StackError

NODE_TIMEOUT_MS = 2000


class RedisCluster:
    """``masters * (1 + replicas)`` nodes on the given ports, under ``run_dir/redis-cluster``."""

    name = "redis-cluster"

    def __init__(
        self,
        run_dir: Path,
        ports: list[int],
        *,
        bus_ports: list[int] | None = None,
        replicas: int = 1,
    ) -> None:
        if len(ports) % (1 + replicas) or len(ports) // (1 + replicas) < 3:
            raise ValueError("a cluster needs at least 3 masters, each with its replicas")
        self.home = run_dir / "redis-cluster"
        self.ports = ports
        # The nodes' cluster bus; Redis's default (port + 10000) needs ports up to 55535.
        self.bus_ports = dict(zip(ports, bus_ports or [p + 10000 for p in ports], strict=True))
        self.replicas = replicas
        self.log = self.home / "cluster.log"

    @property
    def url(self) -> str:
        """A seed node; the client finds the others (no database index on a cluster)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def node_dir(self, port: int) -> Path:
        return self.home / str(port)

    def pid_file(self, port: int) -> Path:
        return self.node_dir(port) / "redis.pid"

    def pid(self, port: int | None = None) -> int | None:
        return read_pid(self.pid_file(port or self.ports[0]))

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError("Redis is not installed: run `make bootstrap`")
        for port in self.ports:
            self.start_node(port)
        if not (self.home / "created").exists():
            self._create()
            (self.home / "created").write_text("yes\n")
        self.wait_ok()

    def start_node(self, port: int) -> None:
        pid = read_pid(self.pid_file(port))
        if pid is not None and is_running(pid):
            return
        folder = self.node_dir(port)
        folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        pid = spawn_detached(
            [
                binary,
                *self._node_args(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--cluster-port",
                str(self.bus_ports[port]),
                *REDIS_OPTIONS,
            ],
            folder / "redis.log",
        )
        self.pid_file(port).write_text(str(pid))
        self._wait_ping(port)

    def _node_args(self, port: int) -> list[str]:
        """Where a node listens (the secured cluster's: TLS only, ACLs, deploy/secure.py)."""
        return ["--port", str(port)]

    def _cli_base(self) -> list[str]:
        """redis-cli as it reaches the nodes (the secured cluster's: TLS, as the admin)."""
        return ["redis-cli"]

    def stop(self) -> None:
        for port in self.ports:
            self.stop_node(port)

    def stop_node(self, port: int) -> None:
        stop_pid(self.pid_file(port), signal.SIGTERM, timeout=15)

    def kill_node(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        stop_pid(self.pid_file(port), signal.SIGKILL, timeout=5)

    def masters(self) -> list[int]:
        """The ports of the nodes that are masters serving slots now."""
        out = self._cli(self._alive_port(), "cluster", "nodes")
        found = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                found.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(found)

    def wait_failover(self, port: int, timeout: float = 30.0) -> None:
        """Until the dead master on ``port`` is replaced by its replica, and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while port in self.masters():
            if time.monotonic() > deadline:
                raise StackError(f"no replica took over from {port} within {timeout}s")
            time.sleep(0.2)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and serves all slots."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                pid = read_pid(self.pid_file(port))
                if pid is None or not is_running(pid):
                    continue
                try:
                    states.append(self._cli(port, "cluster", "info"))
                except (subprocess.SubprocessError, OSError) as exc:
                    last = str(exc)
                    states.append("")
            healthy = bool(states) and all(
                "cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states
            )
            # With every node up, each replica has also taken its role and synced with its
            # master (a replica that never synced refuses to take over when the master dies).
            if healthy and (len(states) < len(self.ports) or self._replicas_synced()):
                return
            last = states[0][:200] if states else last
            time.sleep(0.2)
        raise StackError(f"the Redis Cluster is not ok after {timeout}s: {last}")

    def _replicas_synced(self) -> bool:
        replicas = len(self.ports) - len(self.ports) // (1 + self.replicas)
        synced = 0
        for port in self.ports:
            info = self._cli(port, "info", "replication")
            if "role:slave" in info and "master_link_status:up" in info:
                synced += 1
        return synced == replicas

    def _create(self) -> None:
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        done = subprocess.run(
            [
                *self._cli_base(),
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def _alive_port(self) -> int:
        for port in self.ports:
            pid = read_pid(self.pid_file(port))
            if pid is not None and is_running(pid):
                return port
        raise StackError("no node of the Redis Cluster runs")

    def _wait_ping(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._cli(port, "ping").strip() == "PONG":
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.05)
        raise StackError(f"Redis node {port} did not start; see {self.node_dir(port)}/redis.log")

    def _cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [*self._cli_base(), "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return done.stdout
