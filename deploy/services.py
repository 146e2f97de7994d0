"""Tollgate's own processes in the local stack: each service, started detached, by PID.

The services and their wiring are ``deploy/system.py``'s; this module runs them on this
machine: each one gets the stack's endpoints, the run folder's tokens and its peers' URLs as
its own prefixed settings (``TOLLGATE_KEYS_...``), logs to ``<run>/services/<name>.log``
and is ready when its health URL answers 200.

The gateway runs as ``TOLLGATE_GATEWAY_REPLICAS`` replicas (default 1): replica ``i``
listens on 8080 + 100 i, is named ``gateway`` (i = 0) or ``gateway-<i>``, and spools to
``<run>/spool`` (i = 0, the folder a single gateway always used, so events it spooled
before are still replayed) or ``<run>/spool-<i>``. All read the same topics. Metering and
billing scale the same way (``TOLLGATE_METERING_REPLICAS``, ``TOLLGATE_BILLING_REPLICAS``:
8082 + 100 i, 8083 + 100 i), each replica one member of its service's consumer group; the
cluster mode (``TOLLGATE_CLUSTER=1``) runs two of each. ``TOLLGATE_SERVICES_PORT_OFFSET``
moves every service's port (a second stack beside the one ``make up`` started).

Every service that reads the model catalogue (``Service.catalogue``) reads the same file:
``TOLLGATE_CATALOGUE`` (a relative path is taken from the current directory), else the demo
catalogue ``deploy/models.yaml``. A file that is missing or does not load as a catalogue is
refused before anything starts; the one the services run on is kept in
``<run>/services/catalogue`` for ``make status``, and a later ``up`` asking for another file
while they run is refused (``make down`` first: a running service keeps its path; the gateway
reloads that file when it changes, the others read it at start).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import yaml
from pydantic import ValidationError

from deploy import system
from deploy.endpoints import Endpoints
from deploy.first_key import ensure_first_key
from deploy.private import write_private
from deploy.process import is_running, port_open, read_pid, spawn_detached, stop_pid, tail
from deploy.servers import REPO, StackError
from deploy.system import SERVICES, Service, replica_name
from shared.catalogue import load_catalogue
from shared.state_mac import new_keyring_text

GATEWAY_PORT = next(s.port for s in SERVICES if s.name == "gateway")
REPLICA_PORT_STEP = 100
MAX_REPLICAS = 20
# The services that run as several replicas, and how many the cluster mode runs of each.
SCALED = ("gateway", "metering", "billing")
CLUSTER_REPLICAS = 2
CATALOGUE_VARIABLE = "TOLLGATE_CATALOGUE"


def replicas_from_env(base: str = "gateway", default: int = 1) -> int:
    """``TOLLGATE_<BASE>_REPLICAS``, else default; a value out of range is a StackError."""
    variable = f"TOLLGATE_{base.upper()}_REPLICAS"
    raw = os.environ.get(variable, str(default)).strip() or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPLICAS:
        raise StackError(f"{variable} must be 1 to {MAX_REPLICAS}, not {raw!r}")
    return int(raw)


def scale_from_env(cluster: bool = False) -> dict[str, int]:
    """Replicas of each scaled service: one each, or two in the cluster mode; the
    ``TOLLGATE_<SERVICE>_REPLICAS`` variables win."""
    default = CLUSTER_REPLICAS if cluster else 1
    return {base: replicas_from_env(base, default) for base in SCALED}


def port_offset_from_env() -> int:
    """``TOLLGATE_SERVICES_PORT_OFFSET``, default 0."""
    raw = os.environ.get("TOLLGATE_SERVICES_PORT_OFFSET", "0").strip() or "0"
    if not raw.lstrip("-").isdigit():
        raise StackError(f"TOLLGATE_SERVICES_PORT_OFFSET must be a number, not {raw!r}")
    return int(raw)


def catalogue_from_env() -> Path:
    """``TOLLGATE_CATALOGUE`` as an absolute path (a relative one from the current directory),
    else the demo catalogue; checked as ``check_catalogue`` does."""
    raw = os.environ.get(CATALOGUE_VARIABLE, "").strip()
    if not raw:
        return check_catalogue(system.CATALOGUE)
    return check_catalogue(Path(raw).expanduser().absolute(), CATALOGUE_VARIABLE)


def check_catalogue(path: Path, given_by: str | None = None) -> Path:
    """path, if it loads as a catalogue (``shared.catalogue.load_catalogue``, ``${...}`` read
    as the services will); else a one-line StackError naming the file and what is wrong."""
    where = f"{given_by} {path}" if given_by else f"the catalogue {path}"
    if not path.is_file():
        problem = "no such file" if not path.exists() else "not a file"
        raise StackError(f"{where}: {problem}")
    try:
        with _demo_upstream_set():
            load_catalogue(path)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(map(str, first["loc"])) or "the file"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise StackError(f"{where} is not a catalogue: {place}: {first['msg']}{more}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StackError(f"{where} is not YAML: {exc.problem}{at}") from None
    except (yaml.YAMLError, ValueError, OSError) as exc:
        problem = " ".join(str(exc).split())
        raise StackError(f"{where} is not a catalogue: {problem}") from None
    return path


@contextlib.contextmanager
def _demo_upstream_set() -> Iterator[None]:
    """TOLLGATE_DEMO_UPSTREAM_URL set while a catalogue is checked, as every service gets it."""
    given = os.environ.get("TOLLGATE_DEMO_UPSTREAM_URL")
    os.environ.setdefault("TOLLGATE_DEMO_UPSTREAM_URL", system.DEMO_UPSTREAM_URL)
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("TOLLGATE_DEMO_UPSTREAM_URL", None)


def _catalogue_record(run_dir: Path) -> Path:
    return run_dir / "services" / "catalogue"


def catalogue_in_use(run_dir: Path) -> Path | None:
    """The catalogue the running services were started on; None when none of the services
    that read it runs (or an older ``up`` kept no record)."""
    record = _catalogue_record(run_dir)
    readers = {s.name for s in SERVICES if s.catalogue}
    running = (
        name
        for name, pid, _ in processes(run_dir, dict.fromkeys(SCALED, 1))
        if pid is not None and name.rsplit("-", 1)[0] in readers
    )
    if not record.is_file() or next(running, None) is None:
        return None
    return Path(record.read_text().strip())


def refuse_other_catalogue(run_dir: Path, catalogue: Path) -> None:
    """A StackError when the services run on another catalogue file: a running service keeps
    the path it was started with."""
    used = catalogue_in_use(run_dir)
    if used is not None and used != catalogue:
        raise StackError(
            f"the services run on the catalogue {used}, not {catalogue}: `make down` first"
        )


def _scale(replicas: int | dict[str, int]) -> dict[str, int]:
    """An int is the gateway's count (the others run once), as before metering scaled."""
    if isinstance(replicas, int):
        return {"gateway": replicas}
    return replicas


def layout(replicas: int | dict[str, int] = 1, port_offset: int = 0) -> tuple[Service, ...]:
    """Every service, each scaled one as that many replicas (an int: the gateway's), each
    port moved by port_offset (tests run a second stack beside one that ``make up`` started)."""
    scale = _scale(replicas)
    out: list[Service] = []
    for service in SERVICES:
        if service.replica is None:
            out.append(replace(service, port=service.port + port_offset))
            continue
        for i in range(scale.get(service.name, 1)):
            port = service.port + REPLICA_PORT_STEP * i + port_offset
            out.append(replace(service, name=replica_name(i, service.name), port=port, replica=i))
    return tuple(out)


def _available(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """Services whose code is in this checkout (the stack grows as services land)."""
    return tuple(
        s for s in services if (REPO / (s.app.split(":")[0].replace(".", "/") + ".py")).exists()
    )


def token(
    run_dir: Path,
    name: str,
    env_var: str,
    new: Callable[[], str] = lambda: secrets.token_urlsafe(32),
) -> str:
    """A token or keyring: from the environment, else generated once into run_dir (mode 0600
    from its creation: never readable by others, not even for an instant)."""
    given = os.environ.get(env_var)
    if given:
        return given
    path = run_dir / name
    if not path.exists():
        write_private(path, new())
    return path.read_text().strip()


def usage_partitions_from_env() -> int | None:
    """``TOLLGATE_USAGE_PARTITIONS``: usage.events' partitions for every service (the most
    replicas a ledger can use); unset, each service's default (6). Out of 1..1024: StackError."""
    raw = os.environ.get("TOLLGATE_USAGE_PARTITIONS")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 1024:
        raise StackError(f"TOLLGATE_USAGE_PARTITIONS={raw!r}: a number of partitions, 1 to 1024")
    return int(raw)


def wiring(
    run_dir: Path, endpoints: Endpoints, port_offset: int = 0, catalogue: Path | None = None
) -> system.Wiring:
    """The system on this machine: the services on their ports (moved by port_offset), the
    tokens of the run folder, the catalogue (default: ``catalogue_from_env``), the spools in
    the run folder."""
    return system.Wiring(
        endpoints,
        urls={s.name: f"http://127.0.0.1:{s.port + port_offset}" for s in SERVICES},
        admin_token=token(run_dir, "admin-token", "TOLLGATE_ADMIN_TOKEN"),
        internal_token=token(run_dir, "internal-token", "TOLLGATE_INTERNAL_TOKEN"),
        spools=run_dir,
        catalogue=catalogue_from_env() if catalogue is None else catalogue,
        usage_partitions=usage_partitions_from_env(),
        state_mac_keys=token(
            run_dir, "state-mac-keys", "TOLLGATE_STATE_MAC_KEYS", new=new_keyring_text
        ),
    )


def service_env(service: Service, wired: system.Wiring) -> dict[str, str]:
    """Environment for one service: its settings under its prefix, on top of this one's."""
    return {
        **os.environ,
        **system.environment(service, system.settings_of(service, wired)),
        # The demo catalogue reads its upstream from here; an operator's own value wins.
        "TOLLGATE_DEMO_UPSTREAM_URL": os.environ.get(
            "TOLLGATE_DEMO_UPSTREAM_URL", wired.urls["upstream"] + "/v1"
        ),
        "PYTHONPATH": str(REPO),
    }


def up(
    run_dir: Path,
    endpoints: Endpoints,
    deadline_s: float = 60.0,
    *,
    replicas: int | dict[str, int] | None = None,
    port_offset: int = 0,
    catalogue: Path | None = None,
) -> None:
    """Start every service that is not running and wait for its health URL; the scaled ones
    as ``replicas`` replicas (an int: the gateway's; default from the environment), those
    that read the catalogue on ``catalogue`` (default: ``catalogue_from_env``). Replicas
    beyond that which a former ``up`` started keep running: ``status`` lists them and
    ``down`` stops them."""
    wanted = scale_from_env(endpoints.cluster) if replicas is None else replicas
    catalogue = catalogue_from_env() if catalogue is None else catalogue
    refuse_other_catalogue(run_dir, catalogue)
    folder = run_dir / "services"
    folder.mkdir(parents=True, exist_ok=True)
    services = _available(layout(wanted, port_offset))
    wired = wiring(run_dir, endpoints, port_offset, catalogue)
    _catalogue_record(run_dir).write_text(f"{catalogue}\n")
    print(f"catalogue {catalogue}")
    for service in services:
        pid_file = folder / f"{service.name}.pid"
        log = folder / f"{service.name}.log"
        pid = read_pid(pid_file)
        if pid is None or not is_running(pid):
            if port_open(service.port):
                raise StackError(f"{service.name}: port {service.port} is taken by another process")
            env = service_env(service, wired)
            pid = spawn_detached(service.argv, log, env=env, cwd=REPO)
            pid_file.write_text(str(pid))
        _wait_healthy(service, log, deadline_s)
        print(f"{service.name:9} http://127.0.0.1:{service.port}   log {log}")
    print(f"admin token  in {run_dir / 'admin-token'}")
    if any(s.name == "keys" for s in services):
        print(ensure_first_key(run_dir, wired.admin_token, keys_url=wired.urls["keys"]))


def _replicas_running(run_dir: Path, base: str = "gateway") -> list[int]:
    """Indexes (1 and up) of the replicas of base with a pid file, highest first: a former
    ``up`` may have started more than today's setting asks for."""
    pattern = re.compile(rf"{base}-([1-9][0-9]*)")
    found = (pattern.fullmatch(p.stem) for p in (run_dir / "services").glob(f"{base}-*.pid"))
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def down(run_dir: Path) -> None:
    """Stop the services this stack started: the console, every gateway replica, the rest
    (each scaled service's extra replicas before its first)."""
    folder = run_dir / "services"
    names: list[str] = []
    for service in reversed(SERVICES):
        if service.replica is not None:
            names += [
                replica_name(i, service.name) for i in _replicas_running(run_dir, service.name)
            ]
        names.append(service.name)
    for name in names:
        stop_pid(folder / f"{name}.pid", signal.SIGTERM, timeout=20)
    _catalogue_record(run_dir).unlink(missing_ok=True)


def status(
    run_dir: Path, replicas: int | dict[str, int] | None = None, port_offset: int = 0
) -> dict[str, int | None]:
    """PID of each service that runs, None for one that does not; every replica that runs
    is listed, and those the setting asks for."""
    return {name: pid for name, pid, _ in processes(run_dir, replicas, port_offset)}


def processes(
    run_dir: Path, replicas: int | dict[str, int] | None = None, port_offset: int = 0
) -> list[tuple[str, int | None, int]]:
    """Name, PID (None when it does not run) and port of each service and replica."""
    wanted = _scale(scale_from_env() if replicas is None else replicas)
    listed = list(_available(layout(wanted, port_offset)))
    for service in SERVICES:
        if service.replica is None:
            continue
        for i in sorted(_replicas_running(run_dir, service.name)):
            if i >= wanted.get(service.name, 1):
                port = service.port + REPLICA_PORT_STEP * i + port_offset
                listed.append(replace(service, name=replica_name(i, service.name), port=port))
    out = []
    for service in listed:
        pid = read_pid(run_dir / "services" / f"{service.name}.pid")
        out.append(
            (service.name, pid if pid is not None and is_running(pid) else None, service.port)
        )
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
