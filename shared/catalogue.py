"""The model catalogue: one YAML file that the gateway routes by and billing prices with.

Each model names its upstream (OpenAI-compatible base URL, the environment variable that
holds the upstream's credential, the upstream's own model name) and its prices in USD per
million tokens, each with the moment it takes effect. Prices are decimals written as
strings in the YAML, never floats.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shared.events import UNKNOWN_MODEL, UPSTREAM_ENDPOINT_MAX, ModelName, printable

ModelKind = Literal["chat", "completion", "embedding"]


def _endpoint_url(url: str) -> str:
    """An http(s) URL with a host, printable, no credentials in it (it names the endpoint on
    usage events and metrics)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a base_url holds no credentials: name them in api_key_env")
    if parts.fragment:
        raise ValueError("a base_url has no #fragment")
    parts.port  # noqa: B018 - raises on a port out of range
    return url


EndpointUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=UPSTREAM_ENDPOINT_MAX),
    AfterValidator(printable),
    AfterValidator(_endpoint_url),
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FleetEndpoint(_Frozen):
    """One server of a model's fleet, and its share of the requests."""

    base_url: EndpointUrl = Field(examples=["http://10.0.0.11:8000/v1"])
    weight: float = Field(1.0, gt=0, le=1000, description="its share, relative to the others")


class DnsUpstream(_Frozen):
    """A name whose addresses are the fleet (a Kubernetes headless Service), re-resolved."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.-]+$")
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    path: str = Field("/v1", pattern=r"^/[A-Za-z0-9/_.~-]*$", max_length=200)
    interval_s: float = Field(5.0, ge=0.1, le=3600, description="how often it is re-resolved")


class Health(_Frozen):
    """How an endpoint is probed: before an ejected one returns, and (``interval_s``) always."""

    path: str | None = Field(
        None,
        pattern=r"^/[A-Za-z0-9/_.~-]*$",
        max_length=200,
        description="from the server's root, e.g. /health; default: the base URL's /models",
    )
    interval_s: float | None = Field(
        None, gt=0, le=3600, description="probe every endpoint this often; none: only to return"
    )
    timeout_s: float = Field(2.0, gt=0, le=60)


class Ejection(_Frozen):
    """Passive health: ``after_failures`` failures in a row eject an endpoint for a back-off
    that doubles with each ejection (from ``base_s`` to ``max_s``)."""

    after_failures: int = Field(3, ge=1, le=1000)
    base_s: float = Field(1.0, gt=0, le=3600)
    max_s: float = Field(60.0, gt=0, le=86400)


class ServerQueue(_Frozen):
    """Where the ``server_queue`` policy reads each server's queue (vLLM's, SGLang's)."""

    path: str = Field("/metrics", pattern=r"^/[A-Za-z0-9/_.~-]*$", max_length=200)
    interval_s: float = Field(1.0, ge=0.05, le=60)


class Upstream(_Frozen):
    """Where a model is served, and how to authenticate there: one ``base_url``, a list of
    ``endpoints``, or a ``dns`` name whose addresses are the endpoints."""

    base_url: EndpointUrl | None = Field(None, examples=["http://127.0.0.1:8090/v1"])
    endpoints: tuple[FleetEndpoint, ...] = Field((), max_length=1024)
    dns: DnsUpstream | None = None
    balance: Literal["least_inflight", "server_queue"] = Field(
        "least_inflight",
        description="least_inflight: of two endpoints drawn by weight, the one with fewer "
        "requests in flight from this gateway; server_queue: by the servers' own queues",
    )
    affinity: Literal["none", "key_prefix"] = Field(
        "none", description="key_prefix: a key and its first messages stick to one endpoint"
    )
    health: Health = Health()
    ejection: Ejection = Ejection()
    server_queue: ServerQueue = ServerQueue()
    retries: int = Field(
        2, ge=0, le=10, description="other endpoints tried when nothing of a request was sent"
    )
    api_key_env: str | None = Field(None, description="env var holding the upstream's key")
    model: str | None = Field(None, description="the upstream's name for it; default: the id")
    timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _one_form(self) -> Upstream:
        forms = [self.base_url is not None, bool(self.endpoints), self.dns is not None]
        if sum(forms) != 1:
            raise ValueError("an upstream has exactly one of base_url, endpoints or dns")
        urls = [e.base_url.rstrip("/") for e in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("two endpoints share a base_url")
        if self.ejection.max_s < self.ejection.base_s:
            raise ValueError("ejection.max_s is shorter than ejection.base_s")
        return self

    def fixed_endpoints(self) -> tuple[FleetEndpoint, ...]:
        """The endpoints the catalogue names (none for a ``dns`` upstream)."""
        if self.base_url is not None:
            return (FleetEndpoint(base_url=self.base_url),)
        return self.endpoints

    def api_key(self) -> str | None:
        """The upstream credential, read from the environment when asked for."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class Price(_Frozen):
    """USD per million tokens from ``effective_from`` on."""

    effective_from: AwareDatetime
    input_per_million: Decimal = Field(ge=0)
    output_per_million: Decimal = Field(ge=0)
    cached_input_per_million: Decimal | None = Field(None, ge=0)

    @field_validator(
        "input_per_million", "output_per_million", "cached_input_per_million", mode="before"
    )
    @classmethod
    def _no_floats(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError('write prices as strings ("0.150"), not floats')  # noqa: TRY004
        return value


class ModelEntry(_Frozen):
    """One model the gateway serves."""

    id: ModelName = Field(
        min_length=1,
        description="what clients name it and usage events carry: printable, at most 256 "
        "characters, never the unknown-model marker",
        examples=["Qwen/Qwen2.5-0.5B-Instruct"],
    )
    kind: ModelKind = "chat"
    owned_by: str = "tollgate"
    created: int = 1_767_225_600
    upstream: Upstream
    prices: tuple[Price, ...] = ()
    max_output_tokens: int = Field(
        4096,
        ge=0,
        description="the most output tokens one answer may have: what a budget reserves for a "
        "request that sets no max_tokens (0 for embedding models)",
    )

    @field_validator("id")
    @classmethod
    def _not_the_marker(cls, model_id: str) -> str:
        if model_id == UNKNOWN_MODEL:
            raise ValueError(f"{UNKNOWN_MODEL!r} marks usage of no known model; it cannot be an id")
        return model_id

    @field_validator("prices")
    @classmethod
    def _ordered(cls, prices: tuple[Price, ...]) -> tuple[Price, ...]:
        dates = [p.effective_from for p in prices]
        if len(set(dates)) != len(dates):
            raise ValueError("two prices share an effective_from")
        return tuple(sorted(prices, key=lambda p: p.effective_from))

    def price_at(self, when: datetime) -> Price | None:
        """The price in force at ``when``; None before the first one."""
        current = None
        for price in self.prices:
            if price.effective_from <= when:
                current = price
        return current

    @property
    def upstream_model(self) -> str:
        return self.upstream.model or self.id


class Catalogue(_Frozen):
    """All models, by id."""

    models: tuple[ModelEntry, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalogue:
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError("two models share an id")
        return self

    def get(self, model_id: str) -> ModelEntry | None:
        """The model with that id, or None."""
        return next((m for m in self.models if m.id == model_id), None)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with the environment's values."""

    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is not None:
            return found
        if match.group(2) is not None:
            return match.group(2)
        raise ValueError(f"the catalogue refers to ${{{match.group(1)}}}, which is not set")

    return _ENV_REFERENCE.sub(value, text)


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue YAML at path (``${VAR:-default}`` expanded)."""
    raw = yaml.safe_load(expand_env(path.read_text()))
    return Catalogue.model_validate(raw)
