"""Kafka, PostgreSQL and Redis for a test session from containers, started with testcontainers.

``TOLLGATE_TEST_SERVERS=containers`` makes the session fixture (tests/conftest.py) take its
servers from here instead of local processes, so the same tests check the same contract on
both (``make test-containers``). The images are the compose file's: the local stand-ins that
``make images`` builds (``TOLLGATE_TEST_IMAGES=official`` takes the official ones, which need a
registry). The engine is ``deploy.docker_engine``'s: the one that answers, or our own dockerd,
stopped at the session's end if this session started it. Each server's port is published on
127.0.0.1 only, at a free port chosen here (Kafka advertises that same port, so the broker
listens on it inside its container too). They share one network the session creates (the
engine has no default bridge) and removes. Testcontainers' reaper (Ryuk) is off: its image
cannot be pulled here, and the session removes each container it started, by id.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from deploy.docker_engine import API_VERSION, Engine
from deploy.endpoints import Endpoints
from deploy.ports import free_port
from deploy.process import run_to_end
from deploy.servers import StackError
from deploy.stack import DEFAULT_RUN_DIR, _kafka_ready, _redis_ping

LOCAL = {
    "kafka": "tollgate-local/kafka:4.1.1",
    "postgres": "tollgate-local/postgres:15",
    "redis": "tollgate-local/redis:7",
}
OFFICIAL = {"kafka": "apache/kafka:4.1.1", "postgres": "postgres:17", "redis": "redis:7"}


def _published(container: DockerContainer, port: int, host_port: int) -> DockerContainer:
    """Publish port on 127.0.0.1:host_port only (with_bind_ports would take every address)."""
    container.ports[f"{port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]
    return container


@dataclass
class ContainerServers:
    """The three servers of a test session, in containers."""

    engine: Engine = field(default_factory=lambda: Engine(DEFAULT_RUN_DIR))
    official: bool = os.environ.get("TOLLGATE_TEST_IMAGES") == "official"
    containers: list[DockerContainer] = field(default_factory=list)
    network: Network | None = None
    started_engine: bool = False

    def start(self) -> Endpoints:
        """Start the engine if needed, the images if missing, then the three servers."""
        self.started_engine = self.engine.ensure()
        images = OFFICIAL if self.official else LOCAL
        if not self.official:
            from deploy.images import build_all

            build_all(self.engine)
        os.environ["DOCKER_HOST"] = self.engine.host()
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
        client = {"version": API_VERSION}
        kafka_port, pg_port, redis_port = free_port(), free_port(), free_port()
        password = secrets.token_urlsafe(16)
        # The engine has no default bridge (deploy/docker_engine.py): the session's own network.
        self.network = Network(docker_client_kw=client).create()
        postgres = DockerContainer(images["postgres"], docker_client_kw=client).with_envs(
            POSTGRES_USER="tollgate", POSTGRES_PASSWORD=password, POSTGRES_DB="tollgate"
        )
        redis = DockerContainer(images["redis"], docker_client_kw=client).with_command(
            "redis-server --appendonly yes"
        )
        kafka = DockerContainer(images["kafka"], docker_client_kw=client).with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://:{kafka_port},CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{kafka_port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_LOG_DIRS="/var/lib/kafka/data",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
        for container, port, host_port in (
            (postgres, 5432, pg_port),
            (redis, 6379, redis_port),
            (kafka, kafka_port, kafka_port),
        ):
            self.containers.append(
                _published(container.with_network(self.network), port, host_port)
            )
            container.start()
        endpoints = Endpoints(
            f"127.0.0.1:{kafka_port}",
            f"postgresql://tollgate:{password}@127.0.0.1:{pg_port}/tollgate",
            f"redis://127.0.0.1:{redis_port}/0",
        )
        _wait("postgres", lambda: run_to_end(_postgres_answers(endpoints.database_url)), postgres)
        _wait("redis", lambda: _redis_ping(endpoints.redis_url), redis)
        _wait("kafka", lambda: run_to_end(_kafka_ready(endpoints.kafka_bootstrap)), kafka, 120.0)
        return endpoints

    def stop(self) -> None:
        """Remove every container this session started (volumes too), then our engine."""
        for container in reversed(self.containers):
            container.stop()
        self.containers.clear()
        if self.network is not None:
            self.network.remove()
            self.network = None
        if self.started_engine:
            self.engine.stop()


async def _postgres_answers(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _wait(
    name: str, ready: Callable[[], bool], container: DockerContainer, deadline_s: float = 60.0
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    logs = b"".join(container.get_logs()).decode(errors="replace")[-3000:]
    raise StackError(f"{name} in its container did not answer within {deadline_s:.0f}s:\n{logs}")
