"""Liveness and readiness of a ledger service (metering, billing): one router for both."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.ledger_retry import READ_ERRORS

health_router = APIRouter()


@health_router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@health_router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """The database answers and the consumer (when this process runs one) is consuming."""
    consumer = request.app.state.consumer
    stats = consumer.stats.as_dict() if consumer is not None else {}
    status, code = "ok", 200
    try:
        await request.app.state.pool.fetchval("SELECT 1")
    except READ_ERRORS:
        status, code = "database unavailable", 503
    if consumer is not None and not consumer.running:
        status, code = "consumer stopped", 503
    return JSONResponse({"status": status, **stats}, status_code=code)
