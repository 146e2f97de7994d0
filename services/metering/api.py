"""Metering's HTTP API: the Usage API (OpenAI's organization usage shape) and health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from services.metering import repository
from services.metering.schemas import UsagePage
from services.metering.service import GROUP_FIELDS, WIDTHS, usage_page
from services.metering.settings import MeteringSettings
from shared.access import management_guard
from shared.events import utc_now
from shared.exactly_once import unavailable_as_503
from shared.openapi import NO_NUL, error_responses
from shared.usage_query import parse_usage_query, query_parameters

ProjectId = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL)]


def usage_router(settings: MeteringSettings) -> APIRouter:
    """The Usage API, for the operator token and admin keys holding ``usage:read``, the
    project in scope."""
    guard = management_guard(settings.admin_token, "usage:read")
    router = APIRouter(dependencies=[Depends(guard)])

    @router.get(
        "/v1/projects/{project_id}/usage",
        response_model=None,
        responses={200: {"model": UsagePage}, **error_responses(400, 401, 403, 404, 503)},
        # Parsed by parse_usage_query (its messages, its list forms); documented from its bounds.
        openapi_extra={"parameters": query_parameters(widths=WIDTHS, group_fields=GROUP_FIELDS)},
    )
    async def get_usage(project_id: ProjectId, request: Request) -> dict[str, Any]:
        """Token and request totals per time bucket, optionally per key and model."""
        query = parse_usage_query(
            request.query_params, widths=WIDTHS, group_fields=GROUP_FIELDS, now=utc_now()
        )
        with unavailable_as_503("usage ledger"):
            rows = await repository.sum_buckets(request.app.state.pool, project_id, query)
        return usage_page(project_id, query, rows)

    return router
