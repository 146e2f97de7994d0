"""The three real servers of the local stack: Apache Kafka (KRaft), PostgreSQL and Redis.

Each server is a private instance with its own data folder under the run folder and its own
port on 127.0.0.1. ``start`` launches it detached (it outlives the command that started it)
and records its PID; ``stop`` ends exactly that PID. Readiness is checked by ``deploy.stack``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.private import write_private
from deploy.process import read_pid, spawn_detached, stop_pid, tail

# Every Redis server the stack starts: durable (append-only file, no RDB snapshots), in the
# foreground (the stack keeps its pid), and refusing clients from other addresses.
REDIS_OPTIONS = (
    "--appendonly",
    "yes",
    "--save",
    "",
    "--daemonize",
    "no",
    "--protected-mode",
    "yes",
)

REPO = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.1.1"
KAFKA_POM = REPO / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO / "deploy" / "kafka" / "log4j2.properties"


class StackError(RuntimeError):
    """A server of the local stack could not be installed, started or reached."""


@dataclass(frozen=True)
class Ports:
    """TCP ports of the private servers, all bound to 127.0.0.1."""

    kafka: int = 19092
    kafka_controller: int = 19093
    postgres: int = 15432
    redis: int = 16379
    # The cluster mode: Kafka node i on kafka + 100 i and kafka_controller + 100 i, the six
    # Redis Cluster nodes on redis_cluster + i (their cluster bus 10000 above).
    redis_cluster: int = 17000

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, each overridable:
        TOLLGATE_{KAFKA,KAFKA_CONTROLLER,POSTGRES,REDIS,REDIS_CLUSTER}_PORT."""
        defaults = cls()
        return cls(
            **{
                name: int(os.environ.get(f"TOLLGATE_{name.upper()}_PORT", getattr(defaults, name)))
                for name in ("kafka", "kafka_controller", "postgres", "redis", "redis_cluster")
            }
        )


def kafka_libs() -> Path:
    """Folder that holds the Kafka jars fetched from Maven Central."""
    cache = Path(os.environ.get("TOLLGATE_CACHE_DIR", REPO / ".cache"))
    return cache / f"kafka-{KAFKA_VERSION}" / "libs"


def fetch_kafka() -> Path:
    """Copy Kafka and its runtime dependencies from Maven Central into the cache (once)."""
    libs = kafka_libs()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka: run `make bootstrap`")
    print(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs}", flush=True)
    done = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "package", f"-Dkafka.libs={libs}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"fetching Kafka with Maven failed:\n{done.stdout[-4000:]}{done.stderr}")
    marker.touch()
    return libs


def kafka_java(*args: str, heap: str = "768m") -> list[str]:
    """A java command line with Kafka's jars on the class path and the stack's log4j config."""
    return [
        "java",
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        "-cp",
        f"{kafka_libs()}/*",
        *args,
    ]


class Kafka:
    """One KRaft node that is both broker and controller."""

    name = "kafka"

    def __init__(self, run_dir: Path, ports: Ports) -> None:
        self.home = run_dir / "kafka"
        self.ports = ports
        self.log = self.home / "kafka.log"
        self.pid_file = self.home / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def _listener_lines(self) -> list[str]:
        """The node's listeners (the secured node's: SASL_SSL, deploy/secure.py)."""
        p = self.ports
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{p.kafka},CONTROLLER://127.0.0.1:{p.kafka_controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p.kafka}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]

    def _config(self) -> Path:
        p = self.ports
        config = self.home / "server.properties"
        # 0600: the secured node's listeners carry its administrator's password.
        write_private(
            config,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{p.kafka_controller}",
                    *self._listener_lines(),
                    f"log.dirs={self.home / 'data'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            ),
        )
        return config

    def _java(self, *args: str) -> list[str]:
        return kafka_java(*args)

    def _format_args(self) -> list[str]:
        """More arguments of the storage format (the secured node's SCRAM users)."""
        return []

    def start(self) -> None:
        fetch_kafka()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._config()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
            formatted = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *self._format_args(),
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise StackError(f"formatting Kafka storage failed: {formatted.stdout[-2000:]}")
        pid = spawn_detached(self._java("kafka.Kafka", str(config)), self.log)
        self.pid_file.write_text(str(pid))

    def stop(self) -> None:
        stop_pid(self.pid_file, signal.SIGTERM, timeout=30)


class Postgres:
    """A private PostgreSQL cluster; run as the ``postgres`` system user when we are root."""

    name = "postgres"
    user = "tollgate"
    database = "tollgate"

    def __init__(self, run_dir: Path, ports: Ports) -> None:
        self.home = self._choose_home(run_dir)
        self.ports = ports
        self.data = self.home / "data"
        self.log = self.home / "postgres.log"
        self.password_file = self.home / "password"

    def pid(self) -> int | None:
        return read_pid(self.data / "postmaster.pid")

    @property
    def dsn(self) -> str:
        password = self.password_file.read_text().strip()
        return (
            f"postgresql://{self.user}:{password}@127.0.0.1:{self.ports.postgres}/{self.database}"
        )

    @staticmethod
    def bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if found:
            return found[-1].parent
        on_path = shutil.which("postgres")
        if on_path:
            return Path(on_path).resolve().parent
        raise StackError("PostgreSQL is not installed: run `make bootstrap`")

    @staticmethod
    def _choose_home(run_dir: Path) -> Path:
        """``<run>/postgres``, or, when the postgres user cannot reach the run folder (a repo
        under /root, say), a folder of its own under /var/tmp that ``<run>/postgres`` links to."""
        home = run_dir / "postgres"
        if os.geteuid() != 0 or home.is_symlink():
            return home.resolve() if home.is_symlink() else home
        run_dir.mkdir(parents=True, exist_ok=True)
        reachable = subprocess.run(
            ["runuser", "-u", "postgres", "--", "test", "-x", str(run_dir)], check=False
        )
        if reachable.returncode == 0:
            return home
        digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
        outside = Path("/var/tmp") / f"tollgate-postgres-{digest}"
        outside.mkdir(parents=True, exist_ok=True)
        if not home.exists():
            home.symlink_to(outside, target_is_directory=True)
        return outside

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def _prepare_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; its files belong to the postgres user.
            shutil.chown(self.home, "postgres", "postgres")
            self.home.chmod(0o700)
            reachable = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-w", str(self.home)], check=False
            )
            if reachable.returncode != 0:
                raise StackError(f"the postgres user cannot write to {self.home}")

    def _init(self) -> None:
        password = secrets.token_urlsafe(24)
        pwfile = self.home / "initdb-password"
        pwfile.write_text(password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        done = subprocess.run(
            self._as_owner(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise StackError(f"initdb failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)

    def _server_options(self) -> str:
        """pg_ctl's ``-o``: the port, the address, the socket folder, the sizes (the secured
        cluster adds its TLS settings)."""
        return (
            f"-p {self.ports.postgres} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.home} -c max_connections=300 "
            "-c shared_buffers=256MB -c fsync=on -c synchronous_commit=on"
        )

    def start(self) -> None:
        self._prepare_dirs()
        if not (self.data / "PG_VERSION").exists():
            self._init()
        options = self._server_options()
        done = subprocess.run(
            self._as_owner(
                [
                    str(self.bin_dir() / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-W",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start ({self.log}): {done.stderr}{tail(self.log)}"
            )

    def stop(self) -> None:
        # SIGINT is PostgreSQL's fast shutdown: it rolls back open transactions and exits cleanly.
        stop_pid(self.data / "postmaster.pid", signal.SIGINT, timeout=30)


class Redis:
    """A private Redis server with append-only persistence."""

    name = "redis"

    def __init__(self, run_dir: Path, ports: Ports) -> None:
        self.home = run_dir / "redis"
        self.ports = ports
        self.log = self.home / "redis.log"
        self.pid_file = self.home / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def _listen_args(self) -> list[str]:
        """Where it listens (the secured one: TLS only, with its ACL file)."""
        return ["--port", str(self.ports.redis)]

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError("Redis is not installed: run `make bootstrap`")
        self.home.mkdir(parents=True, exist_ok=True)
        pid = spawn_detached(
            [
                binary,
                *self._listen_args(),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.home),
                *REDIS_OPTIONS,
            ],
            self.log,
        )
        self.pid_file.write_text(str(pid))

    def stop(self) -> None:
        stop_pid(self.pid_file, signal.SIGTERM, timeout=15)


if __name__ == "__main__":  # pragma: no cover - manual fetch: python -m deploy.servers
    print(fetch_kafka())
    sys.exit(0)
