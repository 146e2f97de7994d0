"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): the rules the documents state in words because
no schema can state them, taught to the generator so that a request it calls valid is one the
documents call valid.

Each rule below is one sentence of a document's descriptions; only positive cases (the ones
schemathesis expects accepted) are changed, and only as far as that sentence demands.

- A cursor names an item of the list (``after``, ``before``: a page's ``last_id``) and ``page``
  is the ``next_page`` of an answer to the same query: a drawn one names nothing, so it is
  left out.
- ``end_time`` is after ``start_time`` (the default end is now), and ``limit`` is at most the
  bucket width's maximum.
- A key's ``expires_at`` is in the future.
- An admin key's ``scope.project_ids`` are projects that exist: the test's own
  (``TOLLGATE_CONTRACT_PROJECT_ID``).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.hooks import HookContext

MAX_TIME = 253_402_300_799
WIDTH_MAXIMA = {"1m": 1440, "1h": 168, "1d": 31}
COSTS_MAXIMA = {"1d": 180}
CURSORS = ("after", "before", "page")


def _positive(case: Case[Any]) -> bool:
    return case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE


def _number(value: object) -> int | None:
    """A query integer as drawn (the coverage phase draws some as their text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _times(query: dict[str, Any]) -> None:
    """end_time after start_time; with no end_time given, the end is now."""
    start = _number(query.get("start_time"))
    if start is None:
        return
    end = _number(query.get("end_time"))
    if "end_time" not in query and start < int(time.time()) + 1:
        return
    if end is None or end <= start:
        if start >= MAX_TIME:
            start = MAX_TIME - 1
        query["start_time"], query["end_time"] = start, start + 1


def _limit(query: dict[str, Any], maxima: dict[str, int]) -> None:
    """limit at most the maximum of the bucket width asked (the default width: 1d)."""
    width = query.get("bucket_width") or "1d"
    limit = _number(query.get("limit"))
    if limit is not None and width in maxima and limit > maxima[width]:
        query["limit"] = maxima[width]


def _future(body: dict[str, Any]) -> None:
    """expires_at, when given, in the future."""
    given = body.get("expires_at")
    if not isinstance(given, str):
        return
    try:
        moment = datetime.fromisoformat(given)
    except ValueError:
        return
    if moment.tzinfo is not None and moment <= datetime.now(UTC) + timedelta(minutes=1):
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()


def _existing_projects(body: dict[str, Any]) -> None:
    """scope.project_ids: projects that exist (the test's own)."""
    scope = body.get("scope")
    project = os.environ.get("TOLLGATE_CONTRACT_PROJECT_ID")
    if isinstance(scope, dict) and isinstance(scope.get("project_ids"), list) and project:
        scope["project_ids"] = [project]


@schemathesis.hook
def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
    """A positive case made to follow the rules the documents state in words."""
    if not _positive(case):
        return case
    path = case.operation.path
    if isinstance(case.query, dict):
        for name in CURSORS:
            case.query.pop(name, None)
        if path.endswith(("/usage", "/costs", "/costs/total")):
            _times(case.query)
            _limit(case.query, COSTS_MAXIMA if "/costs" in path else WIDTH_MAXIMA)
    if isinstance(case.body, dict):
        if path.endswith("/keys") and case.method.upper() == "POST":
            _future(case.body)
        if path == "/v1/organization/admin_api_keys":
            _existing_projects(case.body)
    return case
