"""The Usage API on a real ledger: buckets, grouping, filters, paging, scoping, auth, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.metering.main import create_app
from tests.metering.harness import AUTH, CHAT, EMBED, running, usage
from tests.metering.ledgers import Case
from tests.polling import eventually

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
S0 = int(T0.timestamp())


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


EVENTS = [
    usage(key="key_1", at=at(seconds=5), input_tokens=100, output_tokens=20, cached=10),
    usage(key="key_1", at=at(seconds=50), input_tokens=50, output_tokens=5, status=500),
    usage(key="key_2", model=EMBED, at=at(minutes=1, seconds=10), input_tokens=30, output_tokens=0),
    usage(key="key_1", at=at(minutes=90), input_tokens=7, output_tokens=3),
    usage(key="key_2", at=at(hours=14), input_tokens=1000, output_tokens=1),
    usage(project="proj_b", key="key_9", at=at(seconds=1), input_tokens=999, output_tokens=999),
]
# Produced last, stamped early: it must land in the 10:00 minute all the same.
LATE = usage(key="key_2", at=at(seconds=30), input_tokens=4, output_tokens=2)


@pytest.fixture
async def api(case: Case) -> AsyncIterator[httpx.AsyncClient]:
    settings, _ = case.settings()
    await case.produce(EVENTS)
    await case.produce([LATE])
    async with running(create_app(settings)) as client:
        await eventually(
            lambda: client.get("/readyz"),
            until=lambda r: r.json().get("applied") == len(EVENTS) + 1,
            what="events applied",
        )
        yield client


async def get(client: httpx.AsyncClient, project: str = "proj_a", /, **params: Any) -> Any:
    r = await client.get(f"/v1/projects/{project}/usage", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def totals(results: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            x["api_key_id"],
            x["model"],
            x["num_model_requests"],
            x["input_tokens"],
            x["input_cached_tokens"],
            x["output_tokens"],
            x["num_errors"],
        )
        for x in results
    ]


async def test_minute_buckets_with_a_late_event_and_an_empty_minute(
    api: httpx.AsyncClient,
) -> None:
    page = await get(api, start_time=S0, end_time=S0 + 180, bucket_width="1m")
    assert page["object"] == "page"
    assert page["has_more"] is False
    assert page["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"]) for b in page["data"]] == [
        ("bucket", S0, S0 + 60),
        ("bucket", S0 + 60, S0 + 120),
        ("bucket", S0 + 120, S0 + 180),
    ]
    first, second, third = (b["results"] for b in page["data"])
    assert totals(first) == [(None, None, 3, 154, 10, 27, 1)]
    assert totals(second) == [(None, None, 1, 30, 0, 0, 0)]
    assert third == []
    result = first[0]
    assert result["object"] == "organization.usage.completions.result"
    assert result["project_id"] == "proj_a"


async def test_hour_and_day_buckets_grouped_and_filtered(api: httpx.AsyncClient) -> None:
    page = await get(
        api, start_time=S0, end_time=S0 + 7200, bucket_width="1h", group_by=["api_key_id"]
    )
    assert [totals(b["results"]) for b in page["data"]] == [
        [("key_1", None, 2, 150, 10, 25, 1), ("key_2", None, 2, 34, 0, 2, 0)],
        [("key_1", None, 1, 7, 0, 3, 0)],
    ]
    day = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    page = await get(
        api,
        start_time=day,
        end_time=day + 2 * 86400,
        bucket_width="1d",
        **{"group_by[]": ["api_key_id", "model"]},
    )
    assert [totals(b["results"]) for b in page["data"]] == [
        [
            ("key_1", CHAT, 3, 157, 10, 28, 1),
            ("key_2", CHAT, 1, 4, 0, 2, 0),
            ("key_2", EMBED, 1, 30, 0, 0, 0),
        ],
        [("key_2", CHAT, 1, 1000, 0, 1, 0)],
    ]
    page = await get(api, start_time=day, end_time=day + 86400, models=EMBED, group_by="model")
    assert totals(page["data"][0]["results"]) == [(None, EMBED, 1, 30, 0, 0, 0)]
    page = await get(api, start_time=day, end_time=day + 86400, api_key_ids="key_2,key_3")
    assert totals(page["data"][0]["results"]) == [(None, None, 2, 34, 0, 2, 0)]


async def test_pages_follow_next_page_until_has_more_is_false(api: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {"start_time": S0 + 30, "end_time": S0 + 180, "bucket_width": "1m"}
    first = await get(api, limit=2, **params)
    # Buckets align to the width; the first holds start_time.
    assert [b["start_time"] for b in first["data"]] == [S0, S0 + 60]
    assert first["has_more"] is True
    assert first["next_page"].startswith("page_")
    second = await get(api, limit=2, page=first["next_page"], **params)
    assert [b["start_time"] for b in second["data"]] == [S0 + 120]
    assert second["has_more"] is False
    assert second["next_page"] is None


async def test_usage_is_scoped_to_the_project_in_the_path(api: httpx.AsyncClient) -> None:
    page = await get(api, "proj_b", start_time=S0, end_time=S0 + 60, bucket_width="1m")
    assert totals(page["data"][0]["results"]) == [(None, None, 1, 999, 0, 999, 0)]
    page = await get(api, "proj_nobody", start_time=S0, end_time=S0 + 60, bucket_width="1m")
    assert page["data"][0]["results"] == []


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", "Basic abc"])
async def test_operator_token_is_required(api: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = await api.get("/v1/projects/proj_a/usage", params={"start_time": S0}, headers=headers)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "code", "param"}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": S0, "end_time": S0}, "end_time"),
        ({"start_time": S0, "bucket_width": "5m"}, "bucket_width"),
        ({"start_time": S0, "group_by": "user_id"}, "group_by"),
        ({"start_time": S0, "bucket_width": "1m", "limit": 1441}, "limit"),
        ({"start_time": S0, "limit": 0}, "limit"),
        ({"start_time": S0, "page": "page_bm9wZQ"}, "page"),
        ({"start_time": S0, "page": "garbage"}, "page"),
        ({"start_time": S0, "colour": "blue"}, "colour"),
    ],
)
async def test_bad_query_parameters_are_400_in_openai_shape(
    api: httpx.AsyncClient, params: dict[str, Any], param: str
) -> None:
    r = await api.get("/v1/projects/proj_a/usage", params=params, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
