"""The gateway's settings: ``TOLLGATE_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, require_real_secret
from shared.state_mac import KeyringSettings

_REPO = Path(__file__).resolve().parents[2]


class GatewaySettings(ServiceSettings, KeyringSettings):
    """Where the gateway finds its peers, and its limits."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_GATEWAY_", extra="ignore", frozen=True)

    internal_token: SecretStr = Field(
        SecretStr(""), description="bearer token for the key service's internal verify endpoint"
    )
    keys_url: str = Field("http://127.0.0.1:8081", description="the key service's base URL")
    billing_url: str = Field(
        "http://127.0.0.1:8083",
        description="billing's base URL: the cost ledger budgets start from",
    )
    reservation_lease_s: float = Field(
        900.0,
        gt=0,
        description="a budget reservation not settled by then (its gateway died) is released",
    )
    budget_reconcile_s: float = Field(
        30.0, gt=0, description="how often budgets in use are raised to the cost ledger's spend"
    )
    catalogue_path: Path = Field(_REPO / "deploy" / "models.yaml", description="model catalogue")
    catalogue_poll_s: float = Field(
        2.0,
        ge=0,
        description="how often the catalogue file is checked for changes and reloaded (0: "
        "only on SIGHUP)",
    )
    spool_dir: Path = Field(
        _REPO / ".run" / "spool", description="usage events while Kafka is down"
    )
    spool_max_bytes: int = Field(
        4 * 1024**3,
        gt=0,
        description="bound on the spool and its quarantine together; past it usage waits in"
        " memory and metered requests get 503 until Kafka takes events again",
    )
    spool_warn_ratio: float = Field(
        0.8, gt=0, le=1, description="log a warning once the spool holds this share of its bound"
    )
    redis_prefix: str = Field("tollgate:gw:", description="prefix on every Redis key")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="larger bodies get 413")
    max_json_values: int = Field(
        500_000,
        gt=0,
        description="values one body may hold in all (its commas and opening brackets, counted"
        " before parsing); more get 400. A parsed value takes up to ~100 bytes whatever its size"
        " in the body, so this bounds what parsing one body may take (~50 MB)",
    )
    json_memory_ratio: int = Field(
        8,
        ge=2,
        description="a body whose parse could take more than this many times its size (plus"
        " 1 MiB), counted from its structure before parsing, gets 400: tiny objects and arrays"
        " cost up to 50 times their bytes parsed, token-id arrays about 6",
    )
    large_body_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="bodies above this share large_body_budget_bytes while they are read,"
        " parsed and sent upstream",
    )
    large_body_budget_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="bytes of large bodies in flight at once per process (one larger body goes"
        " alone); the rest wait their turn",
    )
    large_body_wait_s: float = Field(
        10.0, gt=0, description="a large body that waited this long for its turn gets 503"
    )
    local_cache_size: int = Field(100_000, gt=0, description="keys held in process")
    local_cache_ttl_s: float = Field(
        30.0,
        gt=0,
        description="re-check Redis after this long while the key-state subscription is up"
        " (it pushes every change at once)",
    )
    unsubscribed_cache_ttl_s: float = Field(
        1.0,
        gt=0,
        description="re-check Redis or the key service after this long while the key-state"
        " subscription is down (or was, since the entry was confirmed)",
    )
    stale_key_max_s: float = Field(
        300.0,
        gt=0,
        description="with neither Redis nor the key service answering, serve a cached key"
        " this long after it was last confirmed; then refuse it with 503",
    )
    negative_cache_ttl_s: float = Field(
        2.0, ge=0, description="how long an unknown key is remembered"
    )
    negative_cache_size: int = Field(
        100_000, gt=0, description="unknown keys remembered, at most (least recently seen go)"
    )
    verify_rate_per_s: float = Field(
        50.0,
        gt=0,
        description="calls to the key service's verify endpoint per second, at most, for keys"
        " that neither this process, its negative cache nor Redis knows; past it (and the"
        " burst) such a key gets 401 invalid_api_key without a database lookup",
    )
    verify_burst: int = Field(
        100, ge=1, description="verify calls allowed at once above the rate (token bucket)"
    )
    state_mac_keys: SecretStr = Field(
        SecretStr(""),
        description="keyring that checks the key service's MAC on key states"
        " (shared/state_mac.py): id:secret entries separated by commas, each verifies;"
        " holds the entry TOLLGATE_KEYS_STATE_MAC_KEYS signs with",
    )
    accept_unsigned_states: bool = Field(
        False,
        description="also trust key states without a MAC (only while upgrading from a"
        " version that did not sign them; a wrong MAC is refused all the same)",
    )
    redis_timeout_s: float = Field(0.25, gt=0, description="per Redis call on the request path")
    verify_timeout_s: float = Field(2.0, gt=0, description="per verify call to the key service")
    dependency_retry_s: float = Field(
        1.0, gt=0, description="after a failure, skip that dependency for this long"
    )
    upstream_max_connections: int = Field(1000, gt=0)
    upstream_keepalive: int = Field(
        1000,
        ge=0,
        description="idle connections kept per upstream host; fewer than the clients in flight"
        " and every burst closes and opens connections again",
    )
    upstream_keepalive_expiry_s: float = Field(
        2.0,
        gt=0,
        description="below the usual 5 s server keep-alive, so a reused connection"
        " is never one the server is closing",
    )
    usage_queue_size: int = Field(100_000, gt=0, description="events waiting for Kafka in memory")
    usage_linger_s: float = Field(
        0.1,
        ge=0,
        le=1.0,
        description="after the first usage event of a batch, wait this long for more: fewer,"
        " larger produce requests (less CPU in gateway and broker) against events in memory longer",
    )
    kafka_delivery_timeout_s: float = Field(
        5.0, gt=0, description="an unacknowledged batch goes to the spool after this long"
    )

    @field_validator("internal_token")
    @classmethod
    def _internal_token_is_real(cls, value: SecretStr) -> SecretStr:
        return require_real_secret(value, "TOLLGATE_GATEWAY_INTERNAL_TOKEN")
