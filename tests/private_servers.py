"""Private servers that a test may stop and start (outages) without touching the shared ones.

Each runs on free ports under the test's tmp folder and is stopped by its fixture.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.ports import free_port
from deploy.process import kill_tree
from deploy.redis_cluster import RedisCluster
from deploy.servers import Kafka, Ports, Postgres, Redis
from deploy.stack import start_one


def private_ports() -> Ports:
    return Ports(
        kafka=free_port(), kafka_controller=free_port(), postgres=free_port(), redis=free_port()
    )


class Private:
    """One private server: ``start()``, ``stop()``, and where it answers."""

    def __init__(self, server: Kafka | Postgres | Redis) -> None:
        self.server = server

    def start(self) -> None:
        start_one(self.server)

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would; start() brings it back."""
        pid = self.server.pid()
        assert pid is not None, f"{self.server.name} has no pid"
        kill_tree(pid)
        if isinstance(self.server, Postgres):
            # The dead postmaster may stay a zombie until init reaps it, and PostgreSQL takes
            # the PID in its stale lock files for a live postmaster; all its processes are gone.
            (self.server.data / "postmaster.pid").unlink(missing_ok=True)
            socket_lock = f".s.PGSQL.{self.server.ports.postgres}.lock"
            (self.server.home / socket_lock).unlink(missing_ok=True)

    async def astart(self) -> None:
        """start(), off the event loop, so the code under test keeps running meanwhile."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """stop(), off the event loop."""
        await asyncio.to_thread(self.stop)

    async def akill(self) -> None:
        """kill(), off the event loop."""
        await asyncio.to_thread(self.kill)

    @property
    def kafka_bootstrap(self) -> str:
        assert isinstance(self.server, Kafka)
        return self.server.bootstrap

    @property
    def database_url(self) -> str:
        assert isinstance(self.server, Postgres)
        return self.server.dsn

    @property
    def redis_url(self) -> str:
        assert isinstance(self.server, Redis)
        return self.server.url


def _private(kind: type[Kafka | Postgres | Redis], tmp: Path) -> Iterator[Private]:
    private = Private(kind(tmp / "run", private_ports()))
    try:
        private.start()
        yield private
    finally:
        private.stop()
        # PostgreSQL's data may live outside tmp (under /var/tmp): leave nothing behind.
        shutil.rmtree(private.server.home, ignore_errors=True)


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A Kafka node of this test's own (about 5 s to start); the test may stop and start it."""
    yield from _private(Kafka, tmp_path_factory.mktemp("kafka"))


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A PostgreSQL of this test's own; the test may stop and start it."""
    yield from _private(Postgres, tmp_path_factory.mktemp("postgres"))


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A Redis of this test's own; the test may stop and start it."""
    yield from _private(Redis, tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of the module's own: 3 masters, one replica each, on free ports."""
    cluster = RedisCluster(
        tmp_path_factory.mktemp("redis-cluster"),
        [free_port() for _ in range(6)],
        bus_ports=[free_port() for _ in range(6)],
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
