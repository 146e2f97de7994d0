"""The whole system as real processes: demo upstream, key service, gateway, metering, billing.

Each runs under uvicorn on a free port with this test's own topic prefix, database schemas,
consumer groups and Redis prefix, against the given Kafka, PostgreSQL and Redis (the
session's, or a test's private ones). The gateway may run as several replicas: ``gateway``,
``gateway-1``, ... each with its own spool folder, all reading the same topics; metering and
billing too (``metering``, ``metering-1``, ...), the replicas of each one consumer group.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.stack import Endpoints
from tests.private_servers import free_port

REPO = Path(__file__).resolve().parents[2]
CHAT = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "Qwen/Qwen3-Embedding-0.6B"


@dataclass
class Process:
    """One service under uvicorn, a child of the test."""

    name: str
    app: str
    port: int
    env: dict[str, str]
    log: Path
    extra_args: tuple[str, ...] = ()
    child: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Spawn the process and wait until it answers its health URL."""
        self.spawn()
        self.wait_healthy()

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", self.app, "--factory", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log", *self.extra_args]  # fmt: skip
        with self.log.open("ab") as out:
            self.child = subprocess.Popen(
                argv, cwd=REPO, env={**os.environ, **self.env}, stdout=out, stderr=out
            )
        self.spawned_at = time.monotonic()

    def wait_healthy(self) -> None:
        assert self.child is not None
        # Counted from the spawn: several processes importing at once on a busy machine.
        deadline = self.spawned_at + 90
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown hook runs, nothing is flushed. start() restarts."""
        assert self.child is not None
        assert self.child.poll() is None, f"{self.name} was not running"
        self.child.kill()
        self.child.wait()

    def stop(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(20)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()


@dataclass
class System:
    """Every service of one test, and the tokens to talk to them."""

    admin_token: str
    processes: dict[str, Process] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.processes[name].url

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop()


def replica_name(service: str, replica: int) -> str:
    """The service's name for its first replica, so callers of one need not know of replicas."""
    return service if replica == 0 else f"{service}-{replica}"


def gateway_name(replica: int) -> str:
    return replica_name("gateway", replica)


def start_system(
    endpoints: Endpoints,
    topic_prefix: str,
    unique: str,
    tmp: Path,
    *,
    gateways: int = 1,
    consumers: int = 1,
    settings: dict[str, dict[str, str]] | None = None,
) -> System:
    """Start the processes and return them once each answers its health URL.

    ``consumers`` replicas each of metering and billing share their service's group and schema.
    ``settings`` adds or overrides a service's variables by name, without its prefix (e.g.
    ``{"metering": {"SESSION_TIMEOUT_MS": "6000"}}``; ``gateway`` holds for every replica).
    """
    admin, internal = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    counts = {"gateway": gateways, "metering": consumers, "billing": consumers}
    service_of = {"upstream": "upstream", "keys": "keys"}
    service_of |= {replica_name(s, i): s for s, n in counts.items() for i in range(n)}
    names = tuple(service_of)
    ports = {name: free_port() for name in names}
    catalogue = tmp / "models.yaml"
    catalogue.write_text(
        (REPO / "deploy" / "models.yaml")
        .read_text()
        .replace("http://127.0.0.1:8090/v1", f"http://127.0.0.1:{ports['upstream']}/v1")
    )
    common = {
        "KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "DATABASE_URL": endpoints.database_url,
        "REDIS_URL": endpoints.redis_url,
        "TOPIC_PREFIX": topic_prefix,
        "LOG_JSON": "true",
    }
    specific = {
        "upstream": {},
        "keys": {"ADMIN_TOKEN": admin, "INTERNAL_TOKEN": internal,
                 "DB_SCHEMA": f"e2e_{unique}_keys", "CONSUMER_GROUP": f"keys-{unique}",
                 "REDIS_PREFIX": f"e2e:{unique}:", "CATALOGUE_PATH": str(catalogue)},
        "gateway": {"INTERNAL_TOKEN": internal, "KEYS_URL": f"http://127.0.0.1:{ports['keys']}",
                    "BILLING_URL": f"http://127.0.0.1:{ports['billing']}",
                    "CATALOGUE_PATH": str(catalogue), "REDIS_PREFIX": f"e2e:{unique}:"},
        "metering": {"ADMIN_TOKEN": admin, "DB_SCHEMA": f"e2e_{unique}_metering",
                     "CONSUMER_GROUP": f"metering-{unique}"},
        "billing": {"ADMIN_TOKEN": admin, "INTERNAL_TOKEN": internal,
                    "DB_SCHEMA": f"e2e_{unique}_billing",
                    "CONSUMER_GROUP": f"billing-{unique}", "CATALOGUE_PATH": str(catalogue)},
    }  # fmt: skip
    apps = {
        "upstream": "deploy.demo_upstream:create_app",
        "keys": "services.keys.main:create_app",
        "gateway": "services.gateway.main:create_app",
        "metering": "services.metering.main:create_app",
        "billing": "services.billing.main:create_app",
    }
    overrides = settings or {}
    system = System(admin_token=admin)
    try:
        for name in names:
            service = service_of[name]
            own = {**common, **specific[service], **overrides.get(service, {})}
            extra: tuple[str, ...] = ()
            if service == "gateway":
                spool = tmp / ("spool" if name == "gateway" else f"spool-{name}")
                own.setdefault("SPOOL_DIR", str(spool))
                # Outlive the clients' idle connections, as `make up` does.
                extra = ("--timeout-keep-alive", "75")
            prefix = f"TOLLGATE_{service.upper()}_"
            env = {prefix + k: v for k, v in own.items()}
            process = Process(name, apps[service], ports[name], env, tmp / f"{name}.log", extra)
            system.processes[name] = process
            # All start at once (none needs another to answer its health URL): on a small
            # machine their imports overlap with the waits.
            process.spawn()
        for process in system.processes.values():
            process.wait_healthy()
    except BaseException:
        system.stop()
        raise
    return system


async def run_client(client: str, script: str, args: list[str], key: str) -> str:
    """Run a real client's script in its own environment (tests/clients/<client>), the key in
    TOLLGATE_KEY; return the last line it printed."""
    folder = REPO / "tests" / "clients" / client
    python = folder / ".venv" / "bin" / "python"
    assert python.exists(), f"{client}'s environment is missing: run `make bootstrap`"
    run = await asyncio.create_subprocess_exec(
        str(python),
        str(folder / script),
        *args,
        env={**os.environ, "TOLLGATE_KEY": key, "DAFT_PROGRESS_BAR": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), 240)
    assert run.returncode == 0, err.decode()[-3000:]
    return out.decode().strip().splitlines()[-1]
