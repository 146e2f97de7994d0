"""The engines secured, as managed services run them: Kafka with a ``SASL_SSL`` listener and
SCRAM users under ACLs, Redis with TLS only and ACL users, PostgreSQL with ``ssl=on`` and
``hostssl`` only, each service with credentials of its own (README.md: "Secure transport").

Certificates come from a private CA made at run time (``deploy/pki.py``); passwords are made
once per run folder into ``secure/credentials.json`` (0600: ``deploy/private.py``). The
secured engines listen on ports of their own (``SecurePorts``), so they run beside the plain
stack. ``SecureEngines.up()`` starts what is not running, waits, creates Tollgate's topics
as the Kafka administrator and grants each service only what it uses; ``service_settings``
are the settings a service connects with.

Least privilege, as granted (topics under ``topic_prefix``, consumer groups by prefix):

- gateway: reads ``keys.events`` (no group: it assigns partitions), writes ``usage.events``;
  Redis: the key store and its channel; no database.
- keys: writes ``keys.events`` and ``audit.events``, reads ``usage.events`` (groups
  ``keys-*``), writes ``usage.events.dlq``; Redis as the gateway; its own schema.
- metering and billing: read ``usage.events`` (groups ``metering*``, ``billing*``), write
  ``usage.events.dlq``; their own schema; no Redis.

The controller listener stays plaintext on 127.0.0.1 (one node: it carries the quorum's own
traffic, never a client's); every client connects through ``SASL_SSL``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg
import redis
from pydantic import SecretStr

from deploy.cluster import (
    KAFKA_NODES,
    MIN_INSYNC_REPLICAS,
    NODE_PORT_STEP,
    REDIS_NODES,
    REPLICATION_FACTOR,
)
from deploy.endpoints import Endpoints
from deploy.kafka_cluster import KafkaCluster, KafkaNode
from deploy.pki import Pki, ensure_pki
from deploy.private import write_private
from deploy.process import is_running, port_open, run_to_end
from deploy.redis_cluster import RedisCluster
from deploy.servers import Kafka, Ports, Postgres, Redis, StackError, kafka_java
from shared.kafka import Replication, broker_reachable, ensure_topics
from shared.kafka_security import KafkaAccess
from shared.redis_client import RedisAuth

SERVICE_USERS = ("keys", "gateway", "metering", "billing")
ADMIN_USER = "tollgate-admin"
SCRAM: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
REDIS_PREFIX = "tollgate:"  # every Redis key and channel a service may touch starts so


@dataclass(frozen=True)
class SecurePorts:
    """Ports of the secured engines, beside the plain stack's."""

    kafka: int = 19592  # the cluster mode's nodes: + 100 per node, as the plain cluster's
    kafka_controller: int = 19593
    postgres: int = 15532
    redis: int = 16479
    redis_cluster: int = 17100  # six nodes from here (their bus 10000 above)

    @classmethod
    def from_env(cls) -> SecurePorts:
        defaults = cls()
        return cls(
            **{
                name: int(
                    os.environ.get(f"TOLLGATE_SECURE_{name.upper()}_PORT", getattr(defaults, name))
                )
                for name in ("kafka", "kafka_controller", "postgres", "redis", "redis_cluster")
            }
        )

    def plain(self) -> Ports:
        """The same ports as the plain servers' classes take them."""
        return Ports(
            kafka=self.kafka,
            kafka_controller=self.kafka_controller,
            postgres=self.postgres,
            redis=self.redis,
        )


def credentials(folder: Path) -> dict[str, str]:
    """One password per user (the services and the administrator), made once, kept 0600."""
    path = folder / "credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    made = {user: secrets.token_urlsafe(24) for user in (*SERVICE_USERS, ADMIN_USER)}
    write_private(path, json.dumps(made))
    return made


def scram_access(bootstrap: str, user: str, pki: Pki, passwords: Mapping[str, str]) -> KafkaAccess:
    """How user connects to a secured Kafka: SASL_SSL with SCRAM-SHA-512, the run's CA."""
    return KafkaAccess(
        bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism=SCRAM,
        sasl_username=user,
        sasl_password=SecretStr(passwords[user]),
        ssl_cafile=pki.ca,
    )


def secured_listener(
    port: int, controller_port: int, pki: Pki, passwords: Mapping[str, str]
) -> list[str]:
    """A node's listeners and security: clients and brokers over ``SASL_SSL`` (SCRAM, the
    server certificate as a PEM keystore), ACLs by ``StandardAuthorizer``, nothing allowed
    without one; the controller listener plaintext on 127.0.0.1 (the quorum's own traffic)."""
    scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://localhost:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        f"sasl.mechanism.inter.broker.protocol={SCRAM}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_login} "
        f'username="{ADMIN_USER}" password="{passwords[ADMIN_USER]}";',
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_login};",
        # PLAIN (as Confluent Cloud's API keys are): the same users, their passwords here.
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{user}="{password}"' for user, password in passwords.items())
        + ";",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={pki.bundle('server')}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={pki.ca}",
        "ssl.client.auth=requested",
        "ssl.endpoint.identification.algorithm=https",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # The controller listener's peers are the nodes themselves, as ANONYMOUS.
        f"super.users=User:{ADMIN_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
    ]


def scram_users(passwords: Mapping[str, str]) -> list[str]:
    """The SCRAM users, made with the storage (no broker round trip needed for them)."""
    out: list[str] = []
    for user, password in passwords.items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            out += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return out


class SecureKafka(Kafka):
    """One KRaft node whose clients must come over TLS with SCRAM, under ACLs."""

    name = "secure-kafka"

    def __init__(self, run_dir: Path, ports: SecurePorts, pki: Pki, passwords: Mapping[str, str]):
        super().__init__(run_dir, ports.plain())
        self.home = run_dir / "secure" / "kafka"
        self.log = self.home / "kafka.log"
        self.pid_file = self.home / "kafka.pid"
        self.pki = pki
        self.passwords = passwords

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.ports.kafka}"

    def _listener_lines(self) -> list[str]:
        p = self.ports
        return secured_listener(p.kafka, p.kafka_controller, self.pki, self.passwords)

    def _format_args(self) -> list[str]:
        return scram_users(self.passwords)

    def admin_properties(self) -> Path:
        """What the Kafka tools connect with: the administrator over SASL_SSL (0600)."""
        return admin_properties(self.home / "admin.properties", self.pki, self.passwords)

    def grant(self, topic_prefix: str = "") -> None:
        """Each service's ACLs: only the topics and groups it uses (idempotent)."""
        grant_acls(self.bootstrap, self.admin_properties(), topic_prefix)


def admin_properties(path: Path, pki: Pki, passwords: Mapping[str, str]) -> Path:
    """What the Kafka tools connect with: the administrator over SASL_SSL (0600)."""
    scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    write_private(
        path,
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                f"sasl.mechanism={SCRAM}",
                f'sasl.jaas.config={scram_login} username="{ADMIN_USER}" '
                f'password="{passwords[ADMIN_USER]}";',
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={pki.ca}",
                "",
            ]
        ),
    )
    return path


def grant_acls(bootstrap: str, properties: Path, topic_prefix: str = "") -> None:
    """Each service's ACLs: only the topics and groups it uses (idempotent)."""
    t = {name: topic_prefix + name for name in _TOPIC_NAMES}
    grants: list[tuple[str, list[str], list[str], list[str]]] = [
        # (user, operations, topics, group prefixes)
        ("gateway", ["Read", "Describe", "DescribeConfigs"], [t["keys.events"]], []),
        ("gateway", ["Write", "Describe"], [t["usage.events"]], []),
        (
            "keys",
            ["Write", "Describe", "DescribeConfigs"],
            [t["keys.events"], t["audit.events"], t["usage.events.dlq"]],
            [],
        ),
        ("keys", ["Read", "Describe", "DescribeConfigs"], [t["usage.events"]], ["keys"]),
        ("metering", ["Read", "Describe", "DescribeConfigs"], [t["usage.events"]], ["metering"]),
        ("metering", ["Write", "Describe", "DescribeConfigs"], [t["usage.events.dlq"]], []),
        ("billing", ["Read", "Describe", "DescribeConfigs"], [t["usage.events"]], ["billing"]),
        ("billing", ["Write", "Describe", "DescribeConfigs"], [t["usage.events.dlq"]], []),
    ]
    base = [
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server", bootstrap,
        "--command-config", str(properties),
    ]  # fmt: skip
    for user, operations, topics, groups in grants:
        argv = [*base, "--add", "--allow-principal", f"User:{user}"]
        for operation in operations:
            argv += ["--operation", operation]
        for topic in topics:
            argv += ["--topic", topic]
        _run_java(argv)
        if groups:
            group_argv = [*base, "--add", "--allow-principal", f"User:{user}"]
            group_argv += ["--operation", "Read", "--operation", "Describe"]
            group_argv += ["--resource-pattern-type", "prefixed"]
            for group in groups:
                group_argv += ["--group", group]
            _run_java(group_argv)


_TOPIC_NAMES = ("keys.events", "usage.events", "usage.events.dlq", "audit.events")


def _run_java(argv: list[str]) -> None:
    done = subprocess.run(
        kafka_java(*argv, heap="256m"), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise StackError(f"{argv[0]} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")


class SecureRedis(Redis):
    """Redis with TLS only (no plaintext port) and ACL users: ``default`` is off."""

    name = "secure-redis"

    def __init__(self, run_dir: Path, ports: SecurePorts, pki: Pki, passwords: Mapping[str, str]):
        super().__init__(run_dir, ports.plain())
        self.home = run_dir / "secure" / "redis"
        self.log = self.home / "redis.log"
        self.pid_file = self.home / "redis.pid"
        self.pki = pki
        self.passwords = passwords

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.ports.redis}/0"

    def _listen_args(self) -> list[str]:
        return [
            "--port", "0",
            "--tls-port", str(self.ports.redis),
            "--tls-cert-file", str(self.pki.cert("server")),
            "--tls-key-file", str(self.pki.key("server")),
            "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "optional",
            "--tls-protocols", "TLSv1.2 TLSv1.3",
            "--aclfile", str(_acl_file(self.home, self.passwords)),
        ]  # fmt: skip


class SecurePostgres(Postgres):
    """PostgreSQL with ``ssl=on``, ``hostssl`` only (no plaintext TCP), a role per service."""

    name = "secure-postgres"

    def __init__(self, run_dir: Path, ports: SecurePorts, pki: Pki, passwords: Mapping[str, str]):
        self.pki = pki
        self.passwords = passwords
        super().__init__(run_dir / "secure", ports.plain())

    def dsn_of(self, user: str) -> str:
        """A service's DSN: its own role, TLS required with the server's name checked."""
        password = (
            self.password_file.read_text().strip() if user == self.user else self.passwords[user]
        )
        return (
            f"postgresql://{user}:{password}@localhost:{self.ports.postgres}/{self.database}"
            f"?sslmode=verify-full&sslrootcert={self.pki.ca}"
        )

    @property
    def dsn(self) -> str:
        return self.dsn_of(self.user)

    def _tls_files(self) -> tuple[Path, Path]:
        """Copies of the server certificate and key the postgres user owns (0600)."""
        cert, key = self.home / "server.pem", self.home / "server.key"
        write_private(cert, self.pki.cert("server").read_text())
        write_private(key, self.pki.key("server").read_text())
        if os.geteuid() == 0:
            for path in (cert, key):
                shutil.chown(path, "postgres", "postgres")
        return cert, key

    def _init(self) -> None:
        super()._init()
        # TLS from any address, and nothing else over TCP.
        (self.data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostssl all all ::1/128 scram-sha-256\n"
        )

    def _server_options(self) -> str:
        cert, key = self._tls_files()
        return (
            f"{super()._server_options()} -c ssl=on -c ssl_cert_file={cert} "
            f"-c ssl_key_file={key} -c ssl_min_protocol_version=TLSv1.2 "
            "-c password_encryption=scram-sha-256"
        )

    async def roles(self) -> None:
        """A login role per service that uses the database, which may create schemas of its
        own (and so owns them) and reach nothing else (idempotent)."""
        conn = await asyncpg.connect(self.dsn.replace(f"/{self.database}?", "/postgres?"))
        try:
            if not await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            ):
                await conn.execute(f'CREATE DATABASE "{self.database}"')
            for user in ("keys", "metering", "billing"):
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
                verb = "ALTER" if exists else "CREATE"
                password = self.passwords[user].replace("'", "''")
                await conn.execute(f"{verb} ROLE \"{user}\" LOGIN PASSWORD '{password}'")
                await conn.execute(
                    f'GRANT CONNECT, CREATE ON DATABASE "{self.database}" TO "{user}"'
                )
            await conn.execute(f'REVOKE ALL ON DATABASE "{self.database}" FROM PUBLIC')
        finally:
            await conn.close()
        db = await asyncpg.connect(self.dsn)
        try:
            # Nobody but an owner creates in public (PostgreSQL 15's default, made explicit).
            await db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        finally:
            await db.close()


@dataclass
class SecureEngines:
    """The three secured engines of one run folder, and what each service connects with; with
    ``cluster``, three Kafka nodes and a Redis Cluster of six (the cluster mode's shape)."""

    run_dir: Path
    ports: SecurePorts
    cluster: bool = False

    def __post_init__(self) -> None:
        self.folder = self.run_dir / "secure"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pki = ensure_pki(self.folder / "pki")
        self.passwords = credentials(self.folder)
        p = self.ports
        self.kafka: SecureKafka | SecureKafkaCluster
        self.redis: SecureRedis | SecureRedisCluster
        if self.cluster:
            steps = [NODE_PORT_STEP * i for i in range(KAFKA_NODES)]
            self.kafka = SecureKafkaCluster(
                self.run_dir,
                [p.kafka + step for step in steps],
                [p.kafka_controller + step for step in steps],
                self.pki,
                self.passwords,
            )
            redis_ports = [p.redis_cluster + i for i in range(REDIS_NODES)]
            self.redis = SecureRedisCluster(self.run_dir, redis_ports, self.pki, self.passwords)
        else:
            self.kafka = SecureKafka(self.run_dir, p, self.pki, self.passwords)
            self.redis = SecureRedis(self.run_dir, p, self.pki, self.passwords)
        self.postgres = SecurePostgres(self.run_dir, self.ports, self.pki, self.passwords)

    def kafka_settings(self, user: str) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user],
            "KAFKA_SSL_CAFILE": str(self.pki.ca),
        }

    def redis_settings(self, user: str) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "REDIS_SSL_CA_CERTS": str(self.pki.ca),
            "REDIS_USERNAME": user,
            "REDIS_PASSWORD": self.passwords[user],
        }

    def service_settings(self, service: str) -> dict[str, str]:
        """The engine settings of a service (names without its prefix): its own users."""
        out = self.kafka_settings(service)
        if service in ("gateway", "keys"):
            out |= self.redis_settings(service)
        if service in ("keys", "metering", "billing"):
            out["DATABASE_URL"] = self.postgres.dsn_of(service)
        if self.cluster:
            out |= {
                "TOPIC_REPLICATION_FACTOR": str(REPLICATION_FACTOR),
                "TOPIC_MIN_INSYNC_REPLICAS": str(MIN_INSYNC_REPLICAS),
            }
            if service in ("gateway", "keys"):
                out["REDIS_CLUSTER"] = "true"
        return out

    def endpoints(self) -> Endpoints:
        """Where the secured engines answer, with every service's own settings."""
        return Endpoints(
            self.kafka.bootstrap,
            self.postgres.dsn,
            self.redis.url,
            cluster=self.cluster,
            replication_factor=REPLICATION_FACTOR if self.cluster else 1,
            min_insync_replicas=MIN_INSYNC_REPLICAS if self.cluster else 1,
            secured={s: self.service_settings(s) for s in SERVICE_USERS},
        )

    def pids(self) -> dict[str, int | None]:
        out = {"secure-postgres": self.postgres.pid()}
        if isinstance(self.kafka, SecureKafkaCluster) and isinstance(
            self.redis, SecureRedisCluster
        ):
            out |= {
                f"secure-kafka-{n.node_id}": self.kafka.pid(n.node_id) for n in self.kafka.nodes
            }
            out |= {f"secure-redis-{port}": self.redis.pid(port) for port in self.redis.ports}
            return out
        return out | {
            "secure-redis": self.redis.pid(),
            "secure-kafka": self.kafka.pid(),
        }

    def stop(self) -> None:
        self.kafka.stop()
        self.redis.stop()
        self.postgres.stop()

    def prepare(self) -> None:
        """Once the engines answer: Tollgate's topics (as the administrator), every
        service's ACLs, the database roles (each idempotent; the ACLs once per folder)."""
        replication = (
            Replication(REPLICATION_FACTOR, MIN_INSYNC_REPLICAS) if self.cluster else Replication()
        )
        run_to_end(ensure_topics(self.admin_kafka(), replication=replication))
        run_to_end(self.postgres.roles())
        granted = self.folder / (
            "kafka-cluster-acls-granted" if self.cluster else "kafka-acls-granted"
        )
        if not granted.exists():
            self.kafka.grant()
            granted.touch()

    def kafka_access(self, user: str) -> KafkaAccess:
        """How user (a service, or the administrator) connects to the secured Kafka."""
        return scram_access(self.kafka.bootstrap, user, self.pki, self.passwords)

    def admin_kafka(self) -> KafkaAccess:
        """The administrator's connection (topics, ACLs): never a service's."""
        return self.kafka_access(ADMIN_USER)

    def up(self, deadline_s: float = 120.0) -> None:
        """Start each engine that does not run, wait until it answers over TLS, prepare."""
        starts: list[tuple[SecurePostgres | SecureRedis | SecureKafka, int]] = [
            (self.postgres, self.ports.postgres)
        ]
        if isinstance(self.redis, SecureRedis) and isinstance(self.kafka, SecureKafka):
            starts += [(self.redis, self.ports.redis), (self.kafka, self.ports.kafka)]
        for server, port in starts:
            pid = server.pid()
            if pid is None or not is_running(pid):
                if port_open(port):
                    raise StackError(f"{server.name}: port {port} is taken by another process")
                server.start()
        if isinstance(self.redis, SecureRedisCluster):
            self.redis.start()  # each node that does not run; the cluster made once
        if isinstance(self.kafka, SecureKafkaCluster):
            self.kafka.start(deadline_s)
        _wait_ready("secure-postgres", self._postgres_ready, deadline_s, self.postgres.log)
        _wait_ready("secure-redis", self._redis_ready, deadline_s, self.redis.log)
        _wait_ready("secure-kafka", self._kafka_ready, deadline_s, self.kafka.log)
        self.prepare()

    def _postgres_ready(self) -> bool:
        async def probe() -> bool:
            try:
                dsn = self.postgres.dsn.replace(f"/{self.postgres.database}?", "/postgres?")
                conn = await asyncpg.connect(dsn, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return False
            await conn.close()
            return True

        return run_to_end(probe())

    def _redis_ready(self) -> bool:
        client = redis.Redis.from_url(
            self.redis.url, socket_timeout=1, **self.redis_auth(ADMIN_USER).options(self.redis.url)
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _kafka_ready(self) -> bool:
        return run_to_end(broker_reachable(self.admin_kafka()))

    def redis_auth(self, user: str) -> RedisAuth:
        return RedisAuth(
            ca_certs=self.pki.ca, username=user, password=SecretStr(self.passwords[user])
        )


def _wait_ready(name: str, ready: Callable[[], bool], deadline_s: float, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise StackError(f"{name} did not become ready within {deadline_s:.0f}s; its log is {log}")


def secure_from_env() -> bool:
    """``TOLLGATE_SECURE=1``: ``make up`` runs the secured engines."""
    return os.environ.get("TOLLGATE_SECURE", "").strip().lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.secure up|down|status|env SERVICE``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deploy.secure", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("service", nargs="?", choices=SERVICE_USERS)
    args = parser.parse_args(argv)
    from deploy.cluster import cluster_from_env
    from deploy.stack import DEFAULT_RUN_DIR

    if args.command == "down":
        # Whichever mode ran: the single engines, the cluster's, or neither (nothing to make).
        if (DEFAULT_RUN_DIR / "secure").exists():
            for cluster in (False, True):
                SecureEngines(DEFAULT_RUN_DIR, SecurePorts.from_env(), cluster=cluster).stop()
        return 0
    engines = SecureEngines(DEFAULT_RUN_DIR, SecurePorts.from_env(), cluster=cluster_from_env())
    if args.command == "up":
        engines.up()
        print(f"secured engines up; credentials in {engines.folder} (0600)")
    elif args.command == "status":
        for name, pid in engines.pids().items():
            print(
                f"{name:16} {'running, pid ' + str(pid) if pid and is_running(pid) else 'stopped'}"
            )
    elif args.service is None:
        parser.error("env needs a SERVICE")
    else:
        for name, value in engines.service_settings(args.service).items():
            print(f"TOLLGATE_{args.service.upper()}_{name}={value}")
    return 0


class SecureRedisCluster(RedisCluster):
    """A Redis Cluster as managed ones run: TLS only on clients, the cluster bus and
    replication (``tls-cluster``, ``tls-replication``), the same ACL users on every node
    (replicas sync as the administrator), ``default`` off."""

    name = "secure-redis-cluster"

    def __init__(
        self, run_dir: Path, ports: list[int], pki: Pki, passwords: Mapping[str, str]
    ) -> None:
        super().__init__(run_dir / "secure", ports)
        self.home = run_dir / "secure" / "redis-cluster"
        self.log = self.home / "cluster.log"
        self.pki = pki
        self.passwords = passwords

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.ports[0]}"

    def _node_args(self, port: int) -> list[str]:
        admin = self.passwords[ADMIN_USER]
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cluster", "yes",
            "--tls-replication", "yes",
            "--tls-cert-file", str(self.pki.cert("server")),
            "--tls-key-file", str(self.pki.key("server")),
            "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "optional",
            "--aclfile", str(_acl_file(self.home, self.passwords)),
            "--masteruser", ADMIN_USER,
            "--masterauth", admin,
        ]  # fmt: skip

    def _cli_base(self) -> list[str]:
        return [
            "redis-cli", "--tls", "--cacert", str(self.pki.ca), "--user", ADMIN_USER,
            "--pass", self.passwords[ADMIN_USER], "--no-auth-warning",
        ]  # fmt: skip


def _acl_file(folder: Path, passwords: Mapping[str, str]) -> Path:
    """The ACL file of a secured Redis: the gateway and the key service on Tollgate's keys and
    channels only, the administrator on all; ``default`` off."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "users.acl"
    rights = f"~{REDIS_PREFIX}* &{REDIS_PREFIX}* +@all -@admin -flushall -flushdb"
    lines = ["user default off"]
    lines += [f"user {u} on >{passwords[u]} {rights}" for u in ("gateway", "keys")]
    lines.append(f"user {ADMIN_USER} on >{passwords[ADMIN_USER]} ~* &* +@all")
    write_private(path, "\n".join(lines) + "\n")
    return path


class SecureKafkaCluster(KafkaCluster):
    """Three KRaft nodes as :class:`SecureKafka` is one: SASL_SSL between clients and brokers
    and among brokers, SCRAM users, ACLs."""

    name = "secure-kafka-cluster"

    def __init__(
        self,
        run_dir: Path,
        ports: list[int],
        controller_ports: list[int],
        pki: Pki,
        passwords: Mapping[str, str],
    ) -> None:
        super().__init__(run_dir / "secure", ports, controller_ports)
        self.home = run_dir / "secure" / "kafka-cluster"
        self.log = self.home / "node-1" / "kafka.log"
        self.pki = pki
        self.passwords = passwords

    @property
    def bootstrap(self) -> str:
        return ",".join(f"localhost:{n.port}" for n in self.nodes)

    @property
    def client(self) -> KafkaAccess:
        return scram_access(self.bootstrap, ADMIN_USER, self.pki, self.passwords)

    def _format_args(self) -> list[str]:
        return scram_users(self.passwords)

    def grant(self, topic_prefix: str = "") -> None:
        """Each service's ACLs, as on the single node (the metadata replicates them)."""
        properties = admin_properties(self.home / "admin.properties", self.pki, self.passwords)
        grant_acls(self.bootstrap, properties, topic_prefix)

    def _listener_lines(self, node: KafkaNode) -> list[str]:
        return secured_listener(node.port, node.controller_port, self.pki, self.passwords)


if __name__ == "__main__":
    raise SystemExit(main())
