"""The Usage page and its CSV exports: one period, optional key and model filters.

The page needs ``usage:read``; its cost figures (totals, the cost chart, the cost columns,
budgets' spend) ``costs:read``, without which billing is not asked and they are left out;
the key filter's names ``keys:read``.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.console.budgets import PROJECT, Budgets, BudgetStatus, read_budgets
from services.console.charts import HALF_WIDTH, Series, bar_chart, compact, dollars
from services.console.clients import ApiProblem
from services.console.formatting import usd
from services.console.projects import project_context
from services.console.usage import (
    PERIODS,
    Period,
    PeriodError,
    Report,
    api_query,
    build_report,
    resolve_period,
)
from services.console.web import (
    Console,
    PermissionMissing,
    SessionDep,
    SignedInDep,
    allowed,
    render,
)

router = APIRouter()
GROUP_BY = ("api_key_id", "model")
KeyFilter = Annotated[list[str], Query(alias="key")]
ModelFilter = Annotated[list[str], Query(alias="model")]
CSV_SECTIONS = ("time", "cost", "keys", "models")
USAGE_READ = [allowed("usage:read")]


def _label(moment: datetime, width: str) -> str:
    if width == "1d":
        return f"{moment:%b %-d}"
    return (
        f"{moment:%b %-d %H:%M}" if moment.hour == 0 and moment.minute == 0 else f"{moment:%H:%M}"
    )


async def _buckets(
    call: Awaitable[list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], str | None]:
    """The buckets an API answered, or none and its error message."""
    try:
        return await call, None
    except ApiProblem as exc:
        return [], exc.message


async def _no_buckets() -> list[dict[str, Any]]:
    return []


async def _report(
    app: Console, project_id: str, period: Period, keys: list[str], models: list[str]
) -> tuple[Report, dict[str, str]]:
    """The report, and per part of the page the error of an API that failed (costs only for
    a session with ``costs:read``)."""
    usage_query = api_query(
        period, width=period.width, group_by=GROUP_BY, key_ids=keys, models=models
    )
    # The cost ledger is per UTC day (as OpenAI's): whole days, however short the period.
    costs_query = api_query(period, width="1d", group_by=GROUP_BY, key_ids=keys, models=models)
    (usage, usage_error), (costs, costs_error) = await asyncio.gather(
        _buckets(app.usage.usage(project_id, usage_query)),
        _buckets(app.costs.costs(project_id, costs_query) if app.actions.costs else _no_buckets()),
    )
    errors = {k: v for k, v in (("usage", usage_error), ("costs", costs_error)) if v}
    return build_report(period, usage, costs), errors


async def _budgets(
    app: Console,
    project: dict[str, Any],
    key: dict[str, Any] | None,
    filtered: bool,
) -> tuple[Budgets, BudgetStatus | None]:
    """The project's budget and the selected key's, and the one the cost chart can show.

    The chart shows cost per day, so only a daily budget of just what it shows (the one key
    selected, or the whole project unfiltered) is a line on it.
    """
    wanted = {PROJECT: project.get("budget")}
    if key is not None:
        wanted[key["id"]] = key.get("budget")
    budgets = await read_budgets(app.costs, project["id"], wanted, spend=app.actions.costs)
    shown = budgets.of(key["id"]) if key is not None else budgets.project
    on_chart = shown if shown is not None and shown.period == "day" and not filtered else None
    return budgets, on_chart


def _period(period: str, start: str, end: str) -> tuple[Period, str | None]:
    now = datetime.now(UTC)
    try:
        return resolve_period(period, start, end, now), None
    except PeriodError as exc:
        return resolve_period("7d", "", "", now), str(exc)


async def _keys_of(app: Console, project_id: str) -> list[dict[str, Any]]:
    """The project's keys, revoked too, for their names (none without ``keys:read``)."""
    if not app.actions.read_keys:
        return []
    return await app.keys.list_keys(project_id, include_revoked=True)


@router.get("/projects/{project_id}/usage", dependencies=USAGE_READ)
async def usage_page(
    *,
    request: Request,
    app: SignedInDep,
    session: SessionDep,
    project_id: str,
    key: KeyFilter = [],  # noqa: B006 - FastAPI copies query defaults
    model: ModelFilter = [],  # noqa: B006
    period: str = "7d",
    start: str = "",
    end: str = "",
) -> HTMLResponse:
    """Tokens, requests and costs of the project over a period, by key and by model."""
    context = await project_context(app, project_id)
    all_keys = await _keys_of(app, project_id)
    chosen, period_error = _period(period, start, end)
    report, errors = await _report(app, project_id, chosen, key, model)
    if period_error:
        errors["period"] = period_error
    selected = next((k for k in all_keys if [k["id"]] == key), None)
    filtered = bool(model) or (bool(key) and selected is None)
    budgets, chart_budget = await _budgets(app, context["project"], selected, filtered)
    labels = [_label(moment, chosen.width) for moment, _ in report.series]
    unit = {"1m": "minute", "1h": "hour", "1d": "day"}[chosen.width]
    charts = {
        "tokens": bar_chart(
            title="Tokens",
            description=f"Input and output tokens per {unit}, {chosen.label.lower()}.",
            labels=labels,
            series=[
                Series("Input", "input", [t.input_tokens for _, t in report.series]),
                Series("Output", "output", [t.output_tokens for _, t in report.series]),
            ],
            fmt=compact,
        ),
        "requests": bar_chart(
            title="Requests",
            description=f"Requests per {unit}, {chosen.label.lower()}.",
            labels=labels,
            series=[Series("Requests", "requests", [t.requests for _, t in report.series])],
            fmt=compact,
            width=HALF_WIDTH,
        ),
        "cost": bar_chart(
            title="Cost per day",
            description=f"Cost in US dollars per day, {chosen.label.lower()}.",
            labels=[f"{day:%b %-d}" for day, _ in report.cost_days],
            series=[Series("Cost", "cost", [value for _, value in report.cost_days])],
            fmt=dollars,
            width=HALF_WIDTH,
            limit=(
                (float(chart_budget.limit), f"Budget {usd(chart_budget.limit)} a day")
                if chart_budget
                else None
            ),
        ),
    }
    context.update(
        title="Usage",
        nav="usage",
        report=report,
        period=chosen,
        periods=PERIODS,
        start=f"{chosen.start:%Y-%m-%d}",
        end=f"{chosen.end - timedelta(seconds=1):%Y-%m-%d}",
        selected_keys=key,
        selected_models=model,
        all_keys=all_keys,
        key_names={k["id"]: k for k in all_keys},
        model_choices=sorted(set(app.models) | set(report.by_model) | set(model) - {""}),
        example_model=app.models[0] if app.models else "your-model-id",
        charts=charts,
        labels=labels,
        budgets=budgets,
        selected_key=selected,
        errors=errors,
        export_query=request.url.query,
        now=datetime.now(UTC),
    )
    return render(request, app, "usage.html", context, session=session)


def _csv_rows(
    section: str, report: Report, names: dict[str, str], labels: list[str], *, costs: bool = True
) -> list[list[str]]:
    if section == "time":
        rows = [["bucket_start_utc", "label", "input_tokens", "output_tokens", "requests"]]
        for (moment, t), label in zip(report.series, labels, strict=True):
            rows.append(
                [
                    moment.isoformat(),
                    label,
                    *map(str, (t.input_tokens, t.output_tokens, t.requests)),
                ]
            )
        return rows
    if section == "cost":
        return [["day_utc", "cost_usd"]] + [
            [f"{day:%Y-%m-%d}", str(value)] for day, value in report.cost_days
        ]
    head = "api_key_id" if section == "keys" else "model"
    rows = [
        [
            head,
            *(["name"] if section == "keys" else []),
            "input_tokens",
            "output_tokens",
            "requests",
            *(["cost_usd"] if costs else []),
        ]
    ]
    table = report.by_key if section == "keys" else report.by_model
    for ident, t in table.items():
        extra = [names.get(ident, "")] if section == "keys" else []
        cost = [str(t.cost)] if costs else []
        rows.append(
            [ident, *extra, str(t.input_tokens), str(t.output_tokens), str(t.requests), *cost]
        )
    return rows


def _cell(value: str) -> str:
    # A spreadsheet would run a cell that starts like a formula: key names are user input.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@router.get("/projects/{project_id}/usage.csv", dependencies=USAGE_READ)
async def usage_csv(
    *,
    app: SignedInDep,
    project_id: str,
    section: str = "time",
    key: KeyFilter = [],  # noqa: B006
    model: ModelFilter = [],  # noqa: B006
    period: str = "7d",
    start: str = "",
    end: str = "",
) -> Response:
    """One table or chart of the Usage page as CSV, for the same period and filters."""
    if section not in CSV_SECTIONS:
        raise ApiProblem("console", 404, "No such export.")
    if section == "cost" and not app.actions.costs:
        raise PermissionMissing("costs:read")
    await project_context(app, project_id)
    all_keys = await _keys_of(app, project_id)
    chosen, _error = _period(period, start, end)
    report, errors = await _report(app, project_id, chosen, key, model)
    if errors:
        raise ApiProblem("console", 503, " ".join(errors.values()))
    labels = [_label(moment, chosen.width) for moment, _ in report.series]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    names = {k["id"]: str(k.get("name", "")) for k in all_keys}
    for row in _csv_rows(section, report, names, labels, costs=app.actions.costs):
        writer.writerow([_cell(v) for v in row])
    filename = f"tollgate-{section}-{project_id}-{chosen.start:%Y%m%d}-{chosen.end:%Y%m%d}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
