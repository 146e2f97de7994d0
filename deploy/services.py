"""Tollgate's own processes in the local stack: each service, started detached, by PID.

Each one gets the stack's endpoints as its own prefixed settings (``TOLLGATE_KEYS_...``),
logs to ``<run>/services/<name>.log`` and is ready when its health URL answers 200.

The gateway runs as ``TOLLGATE_GATEWAY_REPLICAS`` replicas (default 1): replica ``i``
listens on 8080 + 100 i, is named ``gateway`` (i = 0) or ``gateway-<i>``, and spools to
``<run>/spool`` (i = 0, the folder a single gateway always used, so events it spooled
before are still replayed) or ``<run>/spool-<i>``. All read the same topics.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from deploy.first_key import ensure_first_key
from deploy.process import is_running, port_open, read_pid, spawn_detached, stop_pid, tail
from deploy.servers import REPO, StackError

if TYPE_CHECKING:
    from deploy.stack import Endpoints

GATEWAY_PORT = 8080
REPLICA_PORT_STEP = 100
MAX_REPLICAS = 20
_REPLICA = re.compile(r"gateway-([1-9][0-9]*)")


@dataclass(frozen=True)
class Service:
    """One Tollgate process: how to start it and how to know it is up."""

    name: str
    prefix: str
    app: str
    port: int
    replica: int | None = None  # the gateway's replica index; None for the other services

    @property
    def argv(self) -> tuple[str, ...]:
        argv: tuple[str, ...] = (sys.executable, "-m", "uvicorn", self.app, "--factory")
        argv += ("--host", "127.0.0.1")
        argv += ("--port", str(self.port), "--no-access-log")
        if self.replica is not None:
            # Clients keep idle connections ~5 s; outliving them avoids the close-while-reused
            # race.
            argv += ("--timeout-keep-alive", "75")
        return argv

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"


SERVICES: tuple[Service, ...] = (
    Service("upstream", "TOLLGATE_UPSTREAM_", "deploy.demo_upstream:create_app", 8090),
    Service("keys", "TOLLGATE_KEYS_", "services.keys.main:create_app", 8081),
    Service("metering", "TOLLGATE_METERING_", "services.metering.main:create_app", 8082),
    Service("billing", "TOLLGATE_BILLING_", "services.billing.main:create_app", 8083),
    Service("gateway", "TOLLGATE_GATEWAY_", "services.gateway.main:create_app", GATEWAY_PORT, 0),
    Service("console", "TOLLGATE_CONSOLE_", "services.console.main:create_app", 8084),
)


def replica_name(index: int) -> str:
    """``gateway`` for the first replica (its pid file and log keep their old names)."""
    return "gateway" if index == 0 else f"gateway-{index}"


def replicas_from_env() -> int:
    """``TOLLGATE_GATEWAY_REPLICAS``, default 1; a value out of range is a StackError."""
    raw = os.environ.get("TOLLGATE_GATEWAY_REPLICAS", "1").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPLICAS:
        raise StackError(f"TOLLGATE_GATEWAY_REPLICAS must be 1 to {MAX_REPLICAS}, not {raw!r}")
    return int(raw)


def layout(replicas: int = 1, port_offset: int = 0) -> tuple[Service, ...]:
    """Every service, the gateway as that many replicas, each port moved by port_offset
    (tests run a second stack beside one that ``make up`` started)."""
    out: list[Service] = []
    for service in SERVICES:
        if service.replica is None:
            out.append(replace(service, port=service.port + port_offset))
            continue
        for i in range(replicas):
            port = service.port + REPLICA_PORT_STEP * i + port_offset
            out.append(replace(service, name=replica_name(i), port=port, replica=i))
    return tuple(out)


def _available(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """Services whose code is in this checkout (the stack grows as services land)."""
    return tuple(
        s for s in services if (REPO / (s.app.split(":")[0].replace(".", "/") + ".py")).exists()
    )


def spool_dir(run_dir: Path, replica: int) -> Path:
    """Replica 0 keeps the single gateway's folder; the others get one each beside it."""
    return run_dir / "spool" if replica == 0 else run_dir / f"spool-{replica}"


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


def service_env(
    service: Service, run_dir: Path, endpoints: Endpoints, port_offset: int = 0
) -> dict[str, str]:
    """Environment for one service: the stack's endpoints and tokens under its own prefix."""
    p = service.prefix

    def url(port: int) -> str:
        return f"http://127.0.0.1:{port + port_offset}"

    return {
        **os.environ,
        f"{p}KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        f"{p}DATABASE_URL": endpoints.database_url,
        f"{p}REDIS_URL": endpoints.redis_url,
        f"{p}ADMIN_TOKEN": token(run_dir, "admin-token", "TOLLGATE_ADMIN_TOKEN"),
        f"{p}INTERNAL_TOKEN": token(run_dir, "internal-token", "TOLLGATE_INTERNAL_TOKEN"),
        f"{p}KEYS_URL": url(8081),
        f"{p}METERING_URL": url(8082),
        f"{p}BILLING_URL": url(8083),
        f"{p}GATEWAY_URL": url(GATEWAY_PORT),
        f"{p}CATALOGUE_PATH": str(REPO / "deploy" / "models.yaml"),
        f"{p}SPOOL_DIR": str(spool_dir(run_dir, service.replica or 0)),
        # The demo catalogue reads its upstream from here; an operator's own value wins.
        "TOLLGATE_DEMO_UPSTREAM_URL": os.environ.get(
            "TOLLGATE_DEMO_UPSTREAM_URL", url(8090) + "/v1"
        ),
        "PYTHONPATH": str(REPO),
    }


def up(
    run_dir: Path,
    endpoints: Endpoints,
    deadline_s: float = 60.0,
    *,
    replicas: int | None = None,
    port_offset: int = 0,
) -> None:
    """Start every service that is not running and wait for its health URL; the gateway as
    ``replicas`` replicas (default ``TOLLGATE_GATEWAY_REPLICAS``). Replicas beyond that which
    a former ``up`` started keep running: ``status`` lists them and ``down`` stops them."""
    wanted = replicas_from_env() if replicas is None else replicas
    folder = run_dir / "services"
    folder.mkdir(parents=True, exist_ok=True)
    services = _available(layout(wanted, port_offset))
    for service in services:
        pid_file = folder / f"{service.name}.pid"
        log = folder / f"{service.name}.log"
        pid = read_pid(pid_file)
        if pid is None or not is_running(pid):
            if port_open(service.port):
                raise StackError(f"{service.name}: port {service.port} is taken by another process")
            env = service_env(service, run_dir, endpoints, port_offset)
            pid = spawn_detached(service.argv, log, env=env, cwd=REPO)
            pid_file.write_text(str(pid))
        _wait_healthy(service, log, deadline_s)
        print(f"{service.name:9} http://127.0.0.1:{service.port}   log {log}")
    print(f"admin token  in {run_dir / 'admin-token'}")
    if any(s.name == "keys" for s in services):
        admin = token(run_dir, "admin-token", "TOLLGATE_ADMIN_TOKEN")
        print(ensure_first_key(run_dir, admin, keys_url=f"http://127.0.0.1:{8081 + port_offset}"))


def _replicas_running(run_dir: Path) -> list[int]:
    """Indexes (1 and up) of the gateway replicas with a pid file, highest first: a former
    ``up`` may have started more than today's setting asks for."""
    found = (_REPLICA.fullmatch(p.stem) for p in (run_dir / "services").glob("gateway-*.pid"))
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def down(run_dir: Path) -> None:
    """Stop the services this stack started: the console, every gateway replica, the rest."""
    folder = run_dir / "services"
    names = ["console", *(replica_name(i) for i in _replicas_running(run_dir)), "gateway"]
    names += [s.name for s in reversed(SERVICES) if s.name not in names]
    for name in names:
        stop_pid(folder / f"{name}.pid", signal.SIGTERM, timeout=20)


def status(run_dir: Path, replicas: int | None = None) -> dict[str, int | None]:
    """PID of each service that runs, None for one that does not; every gateway replica that
    runs is listed, and those the setting asks for."""
    wanted = replicas_from_env() if replicas is None else replicas
    names = [s.name for s in _available(layout(wanted))]
    extra = [replica_name(i) for i in sorted(_replicas_running(run_dir)) if i >= wanted]
    out: dict[str, int | None] = {}
    for name in names + extra:
        pid = read_pid(run_dir / "services" / f"{name}.pid")
        out[name] = pid if pid is not None and is_running(pid) else None
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
