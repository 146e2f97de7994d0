"""What each service reaches of the engines, and with which settings, on secured engines: the
least privilege deploy/secure.py grants and docs/secure-transport.md lists, which
deploy/k8s/secure and docker-compose.secure.yml must give each container, no more."""

from __future__ import annotations

ENGINES = {
    "gateway": {"kafka", "redis"},
    "keys": {"kafka", "redis", "postgres"},
    "metering": {"kafka", "postgres"},
    "billing": {"kafka", "postgres"},
    "console": set(),
}
# The settings of each engine, without the service's TOLLGATE_<APP>_ prefix.
SETTINGS = {
    "kafka": {
        "KAFKA_BOOTSTRAP",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CAFILE",
    },
    "redis": {
        "REDIS_URL",
        "REDIS_CLUSTER",
        "REDIS_SSL_CA_CERTS",
        "REDIS_USERNAME",
        "REDIS_PASSWORD",
    },
    "postgres": {"DATABASE_URL"},
}
ENGINE_PREFIXES = ("KAFKA_", "REDIS_", "DATABASE_")
# The service's own, from a secret store: never another service's.
CREDENTIALS = {
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "DATABASE_URL",
}
CA_FILES = ("KAFKA_SSL_CAFILE", "REDIS_SSL_CA_CERTS")  # and DATABASE_URL's sslrootcert


def prefix(app: str) -> str:
    """The service's settings prefix."""
    return f"TOLLGATE_{app.upper()}_"


def wanted(app: str) -> set[str]:
    """The engine settings the service must have, and may: those of the engines it uses."""
    return {s for engine in ENGINES[app] for s in SETTINGS[engine]}
