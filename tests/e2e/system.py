"""The whole system as real processes: demo upstream, key service, gateway, metering, billing.

The services and their wiring are ``deploy/system.py``'s, as for ``make up``; this harness
adds what is the test's own: free ports, fresh tokens, a catalogue pointing at this upstream,
this test's topic prefix, database schemas, consumer groups and Redis prefix, spools under its
tmp folder, and the servers it is given (the session's, or a test's private ones). The gateway
may run as several replicas: ``gateway``, ``gateway-1``, ... all reading the same topics;
metering and billing too (``metering``, ``metering-1``, ...), the replicas of each one
consumer group on one schema.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from deploy.endpoints import Endpoints
from deploy.ports import free_port
from deploy.system import (
    SERVICES,
    Isolation,
    Service,
    Wiring,
    demo_catalogue,
    environment,
    replica_name,
    settings_of,
)

REPO = Path(__file__).resolve().parents[2]
CHAT = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "Qwen/Qwen3-Embedding-0.6B"


@dataclass
class Process:
    """One service under uvicorn, a child of the test."""

    service: Service
    env: dict[str, str]  # its own settings, under its prefix
    log: Path
    child: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def url(self) -> str:
        return self.service.url

    def start(self) -> None:
        """Spawn the process and wait until it answers its health URL."""
        self.spawn()
        self.wait_healthy()

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.child = subprocess.Popen(
                self.service.argv, cwd=REPO, env={**os.environ, **self.env}, stdout=out, stderr=out
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
                if httpx.get(self.service.health_url, timeout=1).status_code == 200:
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


def _on_free_ports(gateways: int, consumers: int) -> list[Service]:
    """The system's services but the console (these tests drive the APIs), each on a free
    port, the gateway as ``gateways`` replicas, metering and billing as ``consumers``."""
    out: list[Service] = []
    for service in SERVICES:
        if service.name == "console":
            continue
        counts = {"gateway": gateways, "metering": consumers, "billing": consumers}
        count = counts.get(service.name, 1)
        for i in range(count):
            name = replica_name(i, service.name)
            out.append(replace(service, name=name, port=free_port(), replica=i))
    return out


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
    services = _on_free_ports(gateways, consumers)
    urls = {s.name: s.url for s in services}
    wiring = Wiring(
        endpoints,
        urls=urls,
        admin_token=secrets.token_urlsafe(32),
        internal_token=secrets.token_urlsafe(32),
        spools=tmp,
        catalogue=demo_catalogue(tmp, urls["upstream"]),
        isolation=Isolation(
            topic_prefix=topic_prefix,
            schemas={name: f"e2e_{unique}_{name}" for name in ("keys", "metering", "billing")},
            unique=unique,
            redis_prefix=f"e2e:{unique}:",
        ),
    )
    overrides = settings or {}
    system = System(admin_token=wiring.admin_token)
    try:
        for service in services:
            own = {"LOG_JSON": "true", **overrides.get(service.kind, {})}
            env = environment(service, settings_of(service, wiring) | own)
            process = Process(service, env, tmp / f"{service.name}.log")
            system.processes[service.name] = process
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
