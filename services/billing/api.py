"""Billing's HTTP API: the Costs API (OpenAI's costs shape), a rounded total, the gateways'
spend read, and health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse

from services.billing import repository
from services.billing.money import dumps_exact, to_cents
from services.billing.schemas import CostsPage, CostsTotal, ProjectSpend
from services.billing.service import (
    DAY_S,
    GROUP_FIELDS,
    WIDTHS,
    costs_page,
    parse_since,
    spend_body,
)
from services.billing.settings import BillingSettings
from shared.access import management_guard
from shared.events import utc_now
from shared.exactly_once import unavailable_as_503
from shared.http import require_bearer
from shared.openapi import NO_NUL, error_responses
from shared.usage_query import (
    COSTS_LIMITS,
    MAX_TIME,
    UsageQuery,
    parse_usage_query,
    query_parameters,
)

ProjectId = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL)]
# Parsed by parse_usage_query and parse_since (their messages); documented from their bounds.
QUERY = {
    "parameters": query_parameters(widths=WIDTHS, group_fields=GROUP_FIELDS, limits=COSTS_LIMITS)
}
SINCE = {
    "parameters": [
        {
            "name": "since",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TIME, "multipleOf": DAY_S},
            "description": "the start of a UTC day, Unix seconds (0: ever); the ledger is per day",
        }
    ]
}
READ = error_responses(400, 401, 403, 404, 503)


def _exact_json(body: dict[str, Any]) -> Response:
    # Amounts go out as exact JSON numbers: a client parsing them as Decimal loses nothing.
    return Response(dumps_exact(body), media_type="application/json")


def _query(request: Request) -> UsageQuery:
    return parse_usage_query(
        request.query_params,
        widths=WIDTHS,
        group_fields=GROUP_FIELDS,
        now=utc_now(),
        limits=COSTS_LIMITS,
    )


def costs_router(settings: BillingSettings) -> APIRouter:
    """The Costs API, for the operator token and admin keys holding ``costs:read``, the
    project in scope."""
    guard = management_guard(settings.admin_token, "costs:read")
    router = APIRouter(dependencies=[Depends(guard)])

    @router.get(
        "/v1/projects/{project_id}/costs",
        responses={200: {"model": CostsPage}, **READ},
        openapi_extra=QUERY,
    )
    async def get_costs(project_id: ProjectId, request: Request) -> Response:
        """Exact costs per day bucket, optionally per key, model and line item."""
        query = _query(request)
        with unavailable_as_503("cost ledger"):
            rows = await repository.sum_buckets(request.app.state.pool, project_id, query)
        return _exact_json(costs_page(project_id, query, rows))

    @router.get(
        "/v1/projects/{project_id}/costs/total",
        responses={200: {"model": CostsTotal}, **READ},
        openapi_extra=QUERY,
    )
    async def get_total(project_id: ProjectId, request: Request) -> Response:
        """The total over the range as shown or invoiced: summed exactly, then cents half-up."""
        query = _query(request)
        with unavailable_as_503("cost ledger"):
            exact = await repository.total(request.app.state.pool, project_id, query)
        return _exact_json(
            {
                "object": "costs.total",
                "project_id": project_id,
                "start_time": query.start_time // 86400 * 86400,
                "end_time": query.end_time,
                "amount": {"value": to_cents(exact), "currency": "usd"},
                "exact_amount": {"value": exact, "currency": "usd"},
            }
        )

    return router


def internal_router(settings: BillingSettings) -> APIRouter:
    """What the gateways read, guarded by the internal token: they never hold the operator's."""
    guard = require_bearer(settings.internal_token, "internal token")
    router = APIRouter(dependencies=[Depends(guard)])

    @router.get(
        "/internal/v1/projects/{project_id}/spend",
        responses={200: {"model": ProjectSpend}, **error_responses(400, 401, 503)},
        openapi_extra=SINCE,
    )
    async def get_spend(project_id: ProjectId, request: Request) -> JSONResponse:
        """The project's exact spend since a UTC day (or ever), in total and per key."""
        since = parse_since(request.query_params.get("since"))
        now = utc_now()
        with unavailable_as_503("cost ledger"):
            total, per_key = await repository.spend_since(request.app.state.pool, project_id, since)
        return JSONResponse(spend_body(project_id, since, total, per_key, now))

    return router
