"""Where the running servers answer: what the stack hands the services and the tests.

A module of its own because both sides of the stack need it: ``deploy.stack`` makes it when
the servers are up, and ``deploy.system`` turns it into each service's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoints:
    """Where the running servers answer."""

    kafka_bootstrap: str
    database_url: str
    redis_url: str
    cluster: bool = False  # Kafka and Redis are clusters: replicated topics, the cluster client
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # On the secured engines (deploy/secure.py): each service's own engine settings (users,
    # TLS files, DSN), by service kind, instead of the shared ones above.
    secured: Mapping[str, Mapping[str, str]] | None = field(default=None, repr=False)

    def as_env(self) -> dict[str, str]:
        env = {
            "TOLLGATE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TOLLGATE_DATABASE_URL": self.database_url,
            "TOLLGATE_REDIS_URL": self.redis_url,
        }
        if self.cluster:
            env["TOLLGATE_REDIS_CLUSTER"] = "true"
            env["TOLLGATE_TOPIC_REPLICATION_FACTOR"] = str(self.replication_factor)
            env["TOLLGATE_TOPIC_MIN_INSYNC_REPLICAS"] = str(self.min_insync_replicas)
        return env
