"""The local stack without Docker: ``python -m deploy.stack up|down|status|env``.

``make up``, ``make down`` and the test fixtures all go through this module. ``up`` installs
nothing (``make bootstrap`` does), starts Kafka, PostgreSQL and Redis as private instances
under the run folder (``.run/`` by default), waits until each answers, then starts the
Tollgate services listed in ``deploy.services`` (the gateway as ``TOLLGATE_GATEWAY_REPLICAS``
replicas). A second ``up`` reuses what already runs. With ``TOLLGATE_CLUSTER=1`` it runs the
cluster mode instead (``deploy.cluster``): three KRaft nodes, a Redis Cluster of six nodes and
two replicas of the gateway, metering and billing.
``down`` stops exactly the processes that ``up`` recorded, by PID, and checks their ports
are free again. ``TOLLGATE_CATALOGUE=<path>`` runs the services on an operator's own model
catalogue (``deploy.services.catalogue_from_env``); ``up`` checks it before anything starts
and ``status`` names the one the services run on.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from deploy import services
from deploy.cluster import MIN_INSYNC_REPLICAS, REPLICATION_FACTOR, ClusterServers, cluster_from_env
from deploy.endpoints import Endpoints
from deploy.private import write_private
from deploy.process import is_running, port_open, run_to_end, tail
from deploy.secure import SecureEngines, SecurePorts, secure_from_env
from deploy.servers import REPO, Kafka, Ports, Postgres, Redis, StackError

# Endpoints lives in deploy/endpoints.py (deploy.system needs it too); callers keep finding it
# here, where the stack makes it.
__all__ = ["DEFAULT_RUN_DIR", "Endpoints", "Stack", "main", "start_one"]

DEFAULT_RUN_DIR = Path(os.environ.get("TOLLGATE_RUN_DIR", REPO / ".run"))


@dataclass
class Stack:
    """Kafka, PostgreSQL and Redis under one run folder."""

    run_dir: Path = DEFAULT_RUN_DIR
    ports: Ports = field(default_factory=Ports.from_env)
    cluster: bool = field(default_factory=cluster_from_env)

    def __post_init__(self) -> None:
        self.kafka = Kafka(self.run_dir, self.ports)
        self.postgres = Postgres(self.run_dir, self.ports)
        self.redis = Redis(self.run_dir, self.ports)
        self.clustered = ClusterServers(self.run_dir, self.ports)

    @property
    def servers(self) -> tuple[Kafka | Postgres | Redis, ...]:
        return (self.postgres, self.redis, self.kafka)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Several test sessions or `make up`s may start at once: one of them starts the servers.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "stack.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def endpoints(self) -> Endpoints:
        if self.cluster:
            return Endpoints(
                self.clustered.kafka.bootstrap,
                self.postgres.dsn,
                self.clustered.redis.url,
                cluster=True,
                replication_factor=REPLICATION_FACTOR,
                min_insync_replicas=MIN_INSYNC_REPLICAS,
            )
        return Endpoints(self.kafka.bootstrap, self.postgres.dsn, self.redis.url)

    def up(self) -> Endpoints:
        """Start what is not running, wait until all answer, and say where they are."""
        with self._locked():
            self._refuse_other_mode()
            single = (
                (self.redis, self.ports.redis, self._redis_ready, 30.0),
                (self.kafka, self.ports.kafka, self._kafka_ready, 120.0),
            )
            for server, port, ready, deadline in (
                (self.postgres, self.ports.postgres, self._postgres_ready, 60.0),
                *(() if self.cluster else single),
            ):
                pid = server.pid()
                if pid is None or not is_running(pid):
                    if port_open(port):
                        raise StackError(
                            f"{server.name}: port {port} is taken by a process this stack did "
                            "not start; stop it or choose other ports"
                        )
                    server.start()
                _wait_ready(server.name, ready, deadline, server.log)
            if self.cluster:
                self.clustered.up()
            endpoints = self.endpoints()
            # The DSN carries the database password: the owner's eyes only (deploy/private.py).
            write_private(
                self.run_dir / "stack.env",
                "".join(f"{k}={v}\n" for k, v in endpoints.as_env().items()),
            )
            return endpoints

    def _refuse_other_mode(self) -> None:
        """One run folder runs one mode at a time: the services would keep the other's
        endpoints, and the single node and the cluster share ports."""
        if self.cluster:
            other = [s.name for s in (self.kafka, self.redis) if _runs(s.pid())]
        else:
            other = ["the cluster's nodes"] if self.clustered.running() else []
        if other:
            mode = "single-node" if self.cluster else "cluster"
            raise StackError(
                f"{', '.join(other)} of the {mode} stack run in {self.run_dir}: `make down` first"
            )

    def down(self) -> None:
        """Stop the servers this stack started (of either mode), then check that their ports
        are free."""
        with self._locked():
            clustered = self.clustered.down()
            for server in reversed(self.servers):
                server.stop()
            ports = [self.ports.kafka, self.ports.postgres, self.ports.redis, *clustered]
            busy = [p for p in ports if port_open(p)]
            if busy:
                raise StackError(f"ports still in use after stopping the stack: {busy}")

    def status(self) -> dict[str, int | None]:
        """PID of each server that runs, None for one that does not."""
        return {name: pid for name, pid, _ in self.processes()}

    def processes(self) -> list[tuple[str, int | None, int]]:
        """Name, PID (None when it does not run) and port of each server of this mode, and
        of the other mode's that still run."""
        single = [
            (self.postgres.name, self.postgres.pid(), self.ports.postgres),
            (self.redis.name, self.redis.pid(), self.ports.redis),
            (self.kafka.name, self.kafka.pid(), self.ports.kafka),
        ]
        out = [
            (name, pid if _runs(pid) else None, port)
            for i, (name, pid, port) in enumerate(single)
            if i == 0 or not self.cluster or _runs(pid)
        ]
        nodes = self.clustered.processes()
        return out + [n for n in nodes if self.cluster or n[1] is not None]

    def _postgres_ready(self) -> bool:
        return run_to_end(_postgres_ready(self.postgres))

    def _redis_ready(self) -> bool:
        return _redis_ping(self.redis.url)

    def _kafka_ready(self) -> bool:
        return run_to_end(_kafka_ready(self.kafka.bootstrap))


async def _postgres_ready(pg: Postgres) -> bool:
    admin_dsn = pg.dsn.rsplit("/", 1)[0] + "/postgres"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", pg.database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{pg.database}"')
    finally:
        await conn.close()
    return True


async def _kafka_ready(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    host, port = bootstrap.rsplit(":", 1)
    if not port_open(int(port), host):
        return False
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


def _runs(pid: int | None) -> bool:
    return pid is not None and is_running(pid)


def start_one(server: Kafka | Postgres | Redis, deadline_s: float = 120.0) -> None:
    """Start one server on its own (tests stop and start private ones) and wait until ready."""
    server.start()
    if isinstance(server, Kafka):
        bootstrap = server.bootstrap
        _wait_ready(
            server.name, lambda: run_to_end(_kafka_ready(bootstrap)), deadline_s, server.log
        )
    elif isinstance(server, Postgres):
        pg = server
        _wait_ready(server.name, lambda: run_to_end(_postgres_ready(pg)), deadline_s, server.log)
    else:
        _wait_ready(server.name, lambda: _redis_ping(server.url), deadline_s, server.log)


def _redis_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_ready(name: str, ready: Callable[[], bool], deadline_s: float, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise StackError(
        f"{name} did not become ready within {deadline_s:.0f}s; its log is {log}:\n{tail(log)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: up, down, status, env."""
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "infra"])
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        offset = services.port_offset_from_env()
        catalogue = None
        if args.command == "up":
            # The operator's catalogue (TOLLGATE_CATALOGUE) is checked before anything starts.
            catalogue = services.catalogue_from_env()
            services.refuse_other_catalogue(stack.run_dir, catalogue)
        if args.command in ("up", "infra") and secure_from_env():
            # TOLLGATE_SECURE=1: the secured engines (deploy/secure.py), every service with
            # its own credentials over TLS.
            started = time.monotonic()
            engines = SecureEngines(stack.run_dir, SecurePorts.from_env(), cluster=stack.cluster)
            engines.up()
            print(f"secured engines up; credentials in {engines.folder} (0600)")
            if args.command == "up":
                services.up(
                    stack.run_dir, engines.endpoints(), port_offset=offset, catalogue=catalogue
                )
            print(f"ready in {time.monotonic() - started:.1f}s")
        elif args.command in ("up", "infra"):
            started = time.monotonic()
            endpoints = stack.up()
            kafka_log = stack.clustered.kafka.home if stack.cluster else stack.kafka.log
            redis_log = stack.clustered.redis.home if stack.cluster else stack.redis.log
            print(f"kafka     {endpoints.kafka_bootstrap}   log {kafka_log}")
            print(f"postgres  127.0.0.1:{stack.ports.postgres}   log {stack.postgres.log}")
            print(f"redis     {endpoints.redis_url}   log {redis_log}")
            if args.command == "up":
                services.up(stack.run_dir, endpoints, port_offset=offset, catalogue=catalogue)
            print(f"ready in {time.monotonic() - started:.1f}s")
        elif args.command == "down":
            services.down(stack.run_dir)
            stack.down()
            print("stopped")
        elif args.command == "status":
            scale = services.scale_from_env(stack.cluster)
            listed = stack.processes() + services.processes(stack.run_dir, scale, offset)
            for name, pid, port in listed:
                state = f"running, pid {pid}" if pid else "stopped"
                print(f"{name:10} {state:22} port {port}")
            used = services.catalogue_in_use(stack.run_dir)
            if used is not None:
                print(f"{'catalogue':10} {used}")
        else:
            for key, value in stack.endpoints().as_env().items():
                print(f"export {key}={value}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
