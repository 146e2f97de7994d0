"""HTTP routes only: OpenAI's endpoints, the model list, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.errors import ModelNotFound, UsageUnavailable
from services.gateway.instance import Gateway
from services.gateway.policies.describe import describe_key
from shared.policy import allows_model


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
router = APIRouter()


def _proxied(endpoint: str) -> Callable[[Request], Awaitable[Response]]:
    """A plain Starlette endpoint: the proxy reads the body itself, so FastAPI's dependency
    solving and validation (a large share of a request's CPU) are skipped on the hot path."""

    async def forward(request: Request) -> Response:
        gateway = _gateway(request)
        if not gateway.emitter.accepting:
            # Its usage could be kept nowhere: refuse it before any work, never serve unmetered.
            raise UsageUnavailable()
        return await gateway.proxy.handle(request, endpoint)

    forward.__name__ = endpoint.removeprefix("/v1/").replace("/", "_")
    return forward


# Chat completions and completions (streamed or not), the Responses API, embeddings.
for _endpoint in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"):
    router.add_route(_endpoint, _proxied(_endpoint), methods=["POST"])


def _model(entry_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": entry_id, "object": "model", "created": created, "owned_by": owned_by}


@router.get("/v1/models")
async def list_models(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """The catalogue's models the key may use, in OpenAI's list shape (a key is required)."""
    key = await gateway.auth.authenticate(request.headers.get("authorization"))
    gateway.policies.check_scope(key, "models")
    data = [
        _model(m.id, m.created, m.owned_by)
        for m in gateway.catalogue.models
        if allows_model(key.allowed_models, m.id)
    ]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """One model of the catalogue (ids contain slashes, e.g. Qwen/Qwen2.5-0.5B-Instruct)."""
    key = await gateway.auth.authenticate(request.headers.get("authorization"))
    gateway.policies.check_scope(key, "models")
    entry = gateway.catalogue.get(model)
    if entry is None:
        raise ModelNotFound(model)
    gateway.policies.check_model(key, entry.id)
    return _model(entry.id, entry.created, entry.owned_by)


@router.get("/v1/key")
async def get_key(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """What the key's holder may know of it: limits with what remains, budget and spend."""
    key = await gateway.auth.authenticate(request.headers.get("authorization"))
    return await describe_key(gateway.policies, key)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Ready when the key feeder has read the key events up to where they were at start and
    usage can be kept (else metered requests get 503: a balancer should send them elsewhere)."""
    checks = gateway.readiness()
    if not checks["keys_feeder_caught_up"]:
        status = "starting"
    elif not checks["usage_accepting"]:
        status = "usage_unavailable"
    else:
        status = "ready"
    return JSONResponse({"status": status, **checks}, 200 if status == "ready" else 503)


@router.get("/metrics")
async def metrics(gateway: GatewayDep) -> Response:
    """Prometheus text exposition."""
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")
