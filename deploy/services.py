"""Tollgate's own processes in the local stack: each service, started detached, by PID.

Each one gets the stack's endpoints as its own prefixed settings (``TOLLGATE_KEYS_...``),
logs to ``<run>/services/<name>.log`` and is ready when its health URL answers 200.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from deploy.first_key import ensure_first_key
from deploy.process import is_running, port_open, read_pid, spawn_detached, stop_pid, tail
from deploy.servers import REPO, StackError

if TYPE_CHECKING:
    from deploy.stack import Endpoints


@dataclass(frozen=True)
class Service:
    """One Tollgate process: how to start it and how to know it is up."""

    name: str
    prefix: str
    argv: tuple[str, ...]
    port: int

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"


def _uvicorn(app: str, port: int) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    )


SERVICES: tuple[Service, ...] = (
    Service(
        "upstream", "TOLLGATE_UPSTREAM_", _uvicorn("deploy.demo_upstream:create_app", 8090), 8090
    ),
    Service("keys", "TOLLGATE_KEYS_", _uvicorn("services.keys.main:create_app", 8081), 8081),
    Service(
        "metering", "TOLLGATE_METERING_", _uvicorn("services.metering.main:create_app", 8082), 8082
    ),
    Service(
        "billing", "TOLLGATE_BILLING_", _uvicorn("services.billing.main:create_app", 8083), 8083
    ),
    Service(
        "gateway",
        "TOLLGATE_GATEWAY_",
        # Clients keep idle connections ~5 s; outliving them avoids the close-while-reused race.
        (*_uvicorn("services.gateway.main:create_app", 8080), "--timeout-keep-alive", "75"),
        8080,
    ),
    Service(
        "console", "TOLLGATE_CONSOLE_", _uvicorn("services.console.main:create_app", 8084), 8084
    ),
)


def _available() -> tuple[Service, ...]:
    """Services whose code is in this checkout (the stack grows as services land)."""
    out = []
    for service in SERVICES:
        module = service.argv[3].split(":")[0]
        if (REPO / (module.replace(".", "/") + ".py")).exists():
            out.append(service)
    return tuple(out)


def token(run_dir: Path, name: str, env_var: str) -> str:
    """The operator or internal token: from the environment, else generated once into run_dir."""
    given = os.environ.get(env_var)
    if given:
        return given
    path = run_dir / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def service_env(service: Service, run_dir: Path, endpoints: Endpoints) -> dict[str, str]:
    """Environment for one service: the stack's endpoints and tokens under its own prefix."""
    p = service.prefix
    return {
        **os.environ,
        f"{p}KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        f"{p}DATABASE_URL": endpoints.database_url,
        f"{p}REDIS_URL": endpoints.redis_url,
        f"{p}ADMIN_TOKEN": token(run_dir, "admin-token", "TOLLGATE_ADMIN_TOKEN"),
        f"{p}INTERNAL_TOKEN": token(run_dir, "internal-token", "TOLLGATE_INTERNAL_TOKEN"),
        f"{p}KEYS_URL": "http://127.0.0.1:8081",
        f"{p}METERING_URL": "http://127.0.0.1:8082",
        f"{p}BILLING_URL": "http://127.0.0.1:8083",
        f"{p}GATEWAY_URL": "http://127.0.0.1:8080",
        f"{p}CATALOGUE_PATH": str(REPO / "deploy" / "models.yaml"),
        f"{p}SPOOL_DIR": str(run_dir / "spool"),
        "PYTHONPATH": str(REPO),
    }


def up(run_dir: Path, endpoints: Endpoints, deadline_s: float = 60.0) -> None:
    """Start every service that is not running and wait for its health URL."""
    folder = run_dir / "services"
    folder.mkdir(parents=True, exist_ok=True)
    for service in _available():
        pid_file = folder / f"{service.name}.pid"
        log = folder / f"{service.name}.log"
        pid = read_pid(pid_file)
        if pid is None or not is_running(pid):
            if port_open(service.port):
                raise StackError(f"{service.name}: port {service.port} is taken by another process")
            pid = spawn_detached(
                service.argv, log, env=service_env(service, run_dir, endpoints), cwd=REPO
            )
            pid_file.write_text(str(pid))
        _wait_healthy(service, log, deadline_s)
        print(f"{service.name:9} http://127.0.0.1:{service.port}   log {log}")
    print(f"admin token  in {run_dir / 'admin-token'}")
    if any(s.name == "keys" for s in _available()):
        print(ensure_first_key(run_dir, token(run_dir, "admin-token", "TOLLGATE_ADMIN_TOKEN")))


def down(run_dir: Path) -> None:
    """Stop the services this stack started, gateway first."""
    folder = run_dir / "services"
    for service in reversed(SERVICES):
        stop_pid(folder / f"{service.name}.pid", signal.SIGTERM, timeout=20)


def status(run_dir: Path) -> dict[str, int | None]:
    """PID of each service that runs, None for one that does not."""
    out: dict[str, int | None] = {}
    for service in _available():
        pid = read_pid(run_dir / "services" / f"{service.name}.pid")
        out[service.name] = pid if pid is not None and is_running(pid) else None
    return out


def _wait_healthy(service: Service, log: Path, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(service.health_url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StackError(f"{service.name} did not become healthy; its log is {log}:\n{tail(log)}")
