"""The whole system, described once: its services in the order they start, and what wires
each one to the servers and to the others.

``make up`` (``deploy/services.py``) runs it as detached processes on its fixed ports; the
tests run it on free ports with data of their own, as child processes (``tests/e2e``) or as
apps in the test's event loop (``tests/console``). What differs between them (ports, tokens,
where the catalogue and the spools are, a test's own schemas, groups and prefixes) each hands
in as a ``Wiring``; which service is given which of those, and under which setting, is said
here only. docker-compose.yml and deploy/k8s say the same for their platforms; their tests
hold them to the ports and apps named here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploy.endpoints import Endpoints
from shared.state_mac import new_keyring_text

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "deploy" / "models.yaml"
# The demo catalogue's upstream when nothing moves it (TOLLGATE_DEMO_UPSTREAM_URL does).
DEMO_UPSTREAM_URL = "http://127.0.0.1:8090/v1"

Server = Literal["kafka", "postgres", "redis"]
Token = Literal["admin", "internal", "state_mac"]


@dataclass(frozen=True)
class Service:
    """One Tollgate process: how it is started, and what it is given."""

    name: str  # a replica's own name (``gateway-1``); the service's is ``kind``
    prefix: str  # of its settings' variables, TOLLGATE_<SERVICE>_
    app: str  # the uvicorn app factory
    port: int  # on one machine (``make up``); the tests choose free ones
    replica: int | None = None  # the replica index of a scaled service; None for the others
    settings: str | None = None  # its settings class, module:name (the demo upstream has none)
    servers: tuple[Server, ...] = ()  # the servers it uses
    tokens: tuple[Token, ...] = ()  # the operator token guards its API; the internal one
    peers: tuple[str, ...] = ()  # the services it calls, each given as <PEER>_URL
    catalogue: bool = False  # it reads the model catalogue
    spool: bool = False  # it keeps a spool folder, one per replica
    own_data: bool = False  # a schema of its own and a consumer group on usage.events
    uvicorn_args: tuple[str, ...] = ()  # beyond the host, port, access log and protocol
    # Its HTTP protocol: shared.http_server's, or one built on it (the limits every client
    # meets, TOLLGATE_HTTP_*); None for uvicorn's own (the demo upstream, a stand-in).
    http: str | None = "shared.http_server:HttpProtocol"

    @property
    def kind(self) -> str:
        """The service this process is (``gateway`` for each gateway replica)."""
        return self.prefix.removeprefix("TOLLGATE_").removesuffix("_").lower()

    @property
    def argv(self) -> tuple[str, ...]:
        argv: tuple[str, ...] = (sys.executable, "-m", "uvicorn", self.app, "--factory")
        argv += ("--host", "127.0.0.1")
        argv += ("--port", str(self.port), "--no-access-log", *self.uvicorn_args)
        if self.http is not None:
            argv += ("--http", self.http)
        return argv

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/healthz"


SERVICES: tuple[Service, ...] = (
    Service("upstream", "TOLLGATE_UPSTREAM_", "deploy.demo_upstream:create_app", 8090, http=None),
    Service(
        "keys",
        "TOLLGATE_KEYS_",
        "services.keys.main:create_app",
        8081,
        settings="services.keys.settings:KeysSettings",
        servers=("kafka", "postgres", "redis"),
        tokens=("admin", "internal", "state_mac"),
        catalogue=True,
        own_data=True,
    ),
    Service(
        "metering",
        "TOLLGATE_METERING_",
        "services.metering.main:create_app",
        8082,
        replica=0,
        settings="services.metering.settings:MeteringSettings",
        servers=("kafka", "postgres"),
        tokens=("admin", "internal"),
        peers=("keys",),
        own_data=True,
    ),
    Service(
        "billing",
        "TOLLGATE_BILLING_",
        "services.billing.main:create_app",
        8083,
        replica=0,
        settings="services.billing.settings:BillingSettings",
        servers=("kafka", "postgres"),
        tokens=("admin", "internal"),
        peers=("keys",),
        catalogue=True,
        own_data=True,
    ),
    Service(
        "gateway",
        "TOLLGATE_GATEWAY_",
        "services.gateway.main:create_app",
        8080,
        replica=0,
        settings="services.gateway.settings:GatewaySettings",
        servers=("kafka", "redis"),
        tokens=("internal", "state_mac"),
        peers=("keys", "billing"),
        catalogue=True,
        spool=True,
        # Clients keep idle connections ~5 s; outliving them avoids the close-while-reused race.
        uvicorn_args=("--timeout-keep-alive", "75"),
        http="services.gateway.transport.http_protocol:GatewayProtocol",
    ),
    Service(
        "console",
        "TOLLGATE_CONSOLE_",
        "services.console.main:create_app",
        8084,
        settings="services.console.settings:ConsoleSettings",
        tokens=("admin", "internal"),
        peers=("keys", "metering", "billing", "gateway"),
        catalogue=True,
    ),
)


@dataclass(frozen=True)
class Isolation:
    """A test's own data on shared servers: topics, schemas, consumer groups, Redis keys."""

    topic_prefix: str
    schemas: Mapping[str, str]  # the schema of each service with data of its own
    unique: str  # consumer groups are <service>-<unique>
    redis_prefix: str


@dataclass(frozen=True)
class Wiring:
    """What one running system is given: the servers, where each service answers (a scaled
    one's first replica), the tokens, the catalogue and the folder of the spools."""

    endpoints: Endpoints
    urls: Mapping[str, str]
    admin_token: str
    internal_token: str
    spools: Path | None = None  # needed when a service that spools runs
    catalogue: Path = CATALOGUE
    usage_partitions: int | None = None  # usage.events' partitions; None: the default (6)
    isolation: Isolation | None = None
    # The key states' keyring (shared/state_mac.py), the key service's and the gateways'.
    state_mac_keys: str = field(default_factory=new_keyring_text)


def replica_name(index: int, base: str = "gateway") -> str:
    """``gateway`` for the first replica (its pid file, log and URL keep the plain name)."""
    return base if index == 0 else f"{base}-{index}"


def spool_dir(folder: Path, replica: int) -> Path:
    """Replica 0 keeps the single gateway's folder; the others get one each beside it."""
    return folder / "spool" if replica == 0 else folder / f"spool-{replica}"


def settings_of(service: Service, wiring: Wiring) -> dict[str, str]:
    """The service's settings, by variable name without its prefix (``KAFKA_BOOTSTRAP``)."""
    out = _servers(service, wiring.endpoints)
    if "admin" in service.tokens:
        out["ADMIN_TOKEN"] = wiring.admin_token
    if "internal" in service.tokens:
        out["INTERNAL_TOKEN"] = wiring.internal_token
    if "state_mac" in service.tokens:
        out["STATE_MAC_KEYS"] = wiring.state_mac_keys
    for peer in service.peers:
        out[f"{peer.upper()}_URL"] = wiring.urls[peer]
    if service.catalogue:
        out["CATALOGUE_PATH"] = str(wiring.catalogue)
    if wiring.usage_partitions is not None and "kafka" in service.servers:
        out["USAGE_PARTITIONS"] = str(wiring.usage_partitions)
    if service.spool:
        if wiring.spools is None:
            raise ValueError(f"{service.name} keeps a spool, and the wiring gives no folder")
        out["SPOOL_DIR"] = str(spool_dir(wiring.spools, service.replica or 0))
    own = wiring.isolation
    if own is not None and service.settings is not None:
        out["TOPIC_PREFIX"] = own.topic_prefix
        if service.own_data:
            out["DB_SCHEMA"] = own.schemas[service.kind]
            out["CONSUMER_GROUP"] = f"{service.kind}-{own.unique}"
        if "redis" in service.servers:
            out["REDIS_PREFIX"] = own.redis_prefix
    return out


def _servers(service: Service, ends: Endpoints) -> dict[str, str]:
    """Where the servers the service uses answer; on clusters, topics replicated as the
    cluster's are and the Redis Cluster client; on the secured engines, the service's own
    credentials and TLS settings."""
    if ends.secured is not None:
        return dict(ends.secured.get(service.kind, {}))
    out: dict[str, str] = {}
    if "kafka" in service.servers:
        out["KAFKA_BOOTSTRAP"] = ends.kafka_bootstrap
        if ends.cluster:
            out["TOPIC_REPLICATION_FACTOR"] = str(ends.replication_factor)
            out["TOPIC_MIN_INSYNC_REPLICAS"] = str(ends.min_insync_replicas)
    if "postgres" in service.servers:
        out["DATABASE_URL"] = ends.database_url
    if "redis" in service.servers:
        out["REDIS_URL"] = ends.redis_url
        if ends.cluster:
            out["REDIS_CLUSTER"] = "true"
    return out


def environment(service: Service, settings: Mapping[str, str]) -> dict[str, str]:
    """Settings as the process reads them: each variable under the service's prefix."""
    return {service.prefix + name: value for name, value in settings.items()}


def demo_catalogue(folder: Path, upstream_url: str) -> Path:
    """A copy of the demo catalogue whose upstream is upstream_url (a server's base URL), for
    a system whose processes cannot be handed TOLLGATE_DEMO_UPSTREAM_URL."""
    path = folder / "models.yaml"
    path.write_text(CATALOGUE.read_text().replace(DEMO_UPSTREAM_URL, upstream_url + "/v1"))
    return path


def create_app(service: Service, settings: Mapping[str, str]) -> Any:
    """The service's app built in this process, its settings from these values (no other
    source: nothing of this process's environment is read)."""
    module, _, factory = service.app.partition(":")
    create = getattr(importlib.import_module(module), factory)
    if service.settings is None:
        return create()
    module, _, name = service.settings.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return create(cls.model_validate({k.lower(): v for k, v in settings.items()}))
