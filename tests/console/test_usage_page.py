"""The Usage page against the real metering and billing services, fed through Kafka."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from deploy.stack import Endpoints
from shared.events import UsageRecorded
from shared.kafka import idempotent_producer
from shared.topics import USAGE_EVENTS
from tests.console.conftest import Apis
from tests.console.helpers import console_client, console_settings, sign_in
from tests.polling import eventually

CATALOGUE = Path(__file__).resolve().parents[2] / "deploy" / "models.yaml"
CHAT, EMBED = "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen3-Embedding-0.6B"
PRICES = {CHAT: (Decimal("0.150"), Decimal("0.600")), EMBED: (Decimal("0.020"), Decimal(0))}


def event(
    project: str, key: str, model: str, tokens: tuple[int, int], at: datetime
) -> UsageRecorded:
    return UsageRecorded(
        occurred_at=at,
        request_id=f"req_{uuid.uuid4().hex[:12]}",
        project_id=project,
        key_id=key,
        model=model,
        endpoint="/v1/chat/completions" if model == CHAT else "/v1/embeddings",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        status_code=200,
        latency_ms=5,
    )


def price(events: list[UsageRecorded]) -> Decimal:
    million = Decimal(1_000_000)
    return sum(
        (
            (e.input_tokens * PRICES[e.model][0] + e.output_tokens * PRICES[e.model][1]) / million
            for e in events
        ),
        Decimal(0),
    )


async def produce(endpoints: Endpoints, topic_prefix: str, events: list[UsageRecorded]) -> None:
    producer = idempotent_producer(endpoints.kafka_bootstrap, "console-test")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                topic_prefix + USAGE_EVENTS, e.to_bytes(), key=e.key_id.encode()
            )
    finally:
        await producer.stop()


def totals(html: str) -> dict[str, str]:
    """The four totals the page shows, as their exact values."""
    found = dict(re.findall(r'id="total-([a-z-]+)" data-value="([^"]*)"', html))
    assert set(found) == {"input-tokens", "output-tokens", "requests", "cost"}, found
    return found


async def api_totals(
    apis: Apis, project: str, start: datetime, end: datetime, **filters: str
) -> tuple[int, int, int, Decimal]:
    """Input, output, requests and cost that the Usage and Costs APIs answer directly."""
    assert apis.metering is not None
    assert apis.billing is not None
    params = {"start_time": str(int(start.timestamp())), "end_time": str(int(end.timestamp()))}
    params |= filters
    i = o = n = 0
    async with apis.client(apis.metering) as metering:
        answer = (await metering.get(f"/v1/projects/{project}/usage", params=params)).json()
        for bucket in answer["data"]:
            for r in bucket["results"]:
                i, o, n = i + r["input_tokens"], o + r["output_tokens"], n + r["num_model_requests"]
    cost = Decimal(0)
    async with apis.client(apis.billing) as billing:
        response = await billing.get(f"/v1/projects/{project}/costs", params=params)
        for bucket in json.loads(response.text, parse_float=Decimal)["data"]:
            for r in bucket["results"]:
                cost += Decimal(r["amount"]["value"])
    return i, o, n, cost


async def test_the_usage_page_shows_the_numbers_the_apis_return(
    apis: Apis, endpoints: Endpoints, topic_prefix: str
) -> None:
    settings = console_settings(catalogue_path=CATALOGUE)
    async with (
        console_client(settings, apis.transports()) as client,
        apis.client(apis.keys) as keys,
    ):
        await sign_in(client)
        project = (await keys.post("/v1/projects", json={"name": "Usage"})).json()["id"]
        usage_url = f"/projects/{project}/usage"
        empty = await client.get(usage_url)
        assert "create an API key first" in empty.text

        a = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "app-a"})).json()
        b = (await keys.post(f"/v1/projects/{project}/keys", json={"name": "app-b"})).json()
        no_usage = await client.get(usage_url, params={"period": "24h"})
        assert "No requests in this period" in no_usage.text
        assert "http://127.0.0.1:8080/v1/chat/completions" in no_usage.text
        assert "from openai import OpenAI" in no_usage.text
        assert CHAT in no_usage.text  # the snippet's model comes from the catalogue

        now = datetime.now(UTC)
        recent = [
            event(project, a["id"], CHAT, (120, 30), now - timedelta(minutes=5)),
            event(project, a["id"], CHAT, (80, 20), now - timedelta(minutes=4)),
            event(project, b["id"], EMBED, (64, 0), now - timedelta(minutes=3)),
            event(project, b["id"], CHAT, (10, 7), now - timedelta(hours=3)),
        ]
        old = [event(project, a["id"], CHAT, (1000, 500), now - timedelta(days=3))]
        await produce(endpoints, topic_prefix, recent + old)
        want_cost = price(recent + old)

        async def page_7d() -> dict[str, str]:
            return totals((await client.get(usage_url, params={"period": "7d"})).text)

        seven = await eventually(
            page_7d,
            until=lambda t: t["requests"] == "5" and Decimal(t["cost"]) == want_cost,
            timeout=30,
            what="the usage page showing every event",
        )
        assert seven["input-tokens"] == str(sum(e.input_tokens for e in recent + old))
        assert seven["output-tokens"] == str(sum(e.output_tokens for e in recent + old))

        # 75 daily buckets take the APIs three pages (31 a page): the console reads them all.
        first_day = (now - timedelta(days=74)).date().isoformat()
        long = await client.get(
            usage_url,
            params={"period": "custom", "start": first_day, "end": now.date().isoformat()},
        )
        assert totals(long.text) == seven
        first = now - timedelta(days=74)
        assert f"{first:%b %-d, %Y} to {now:%b %-d, %Y}" in long.text  # named by its dates

        page = await client.get(usage_url, params={"period": "24h"})
        shown = totals(page.text)
        hour = now.replace(minute=0, second=0, microsecond=0)
        start, end = hour - timedelta(hours=23), hour + timedelta(hours=1)
        i, o, n, _ = await api_totals(apis, project, start, end)
        assert (shown["input-tokens"], shown["output-tokens"], shown["requests"]) == (
            str(i),
            str(o),
            str(n),
        )
        assert (i, o, n) == (274, 57, 4)  # the events of the last day, by hand
        midnight = hour.replace(hour=0)
        _, _, _, day_cost = await api_totals(
            apis, project, min(start, midnight), end, bucket_width="1d"
        )
        assert Decimal(shown["cost"]) == day_cost
        assert "app-a" in page.text
        assert "app-b" in page.text
        assert "No requests in this period" not in page.text
        assert 'aria-labelledby="chart-tokens-t chart-tokens-d"' in page.text

        assert f"key={b['id']}" in page.text  # each key's row filters the page by it
        only_b = totals(
            (await client.get(usage_url, params={"period": "24h", "key": b["id"]})).text
        )
        assert (only_b["requests"], only_b["input-tokens"]) == ("2", "74")
        only_embed = totals(
            (await client.get(usage_url, params={"period": "24h", "model": EMBED})).text
        )
        assert (only_embed["requests"], only_embed["output-tokens"]) == ("1", "0")

        exported = await client.get(
            f"/projects/{project}/usage.csv", params={"period": "24h", "section": "keys"}
        )
        assert exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        rows = {r["api_key_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
        assert rows[a["id"]]["name"] == "app-a"
        assert (rows[a["id"]]["requests"], rows[a["id"]]["input_tokens"]) == ("2", "200")
        assert (rows[b["id"]]["requests"], rows[b["id"]]["output_tokens"]) == ("2", "7")
        series = list(
            csv.DictReader(
                io.StringIO(
                    (
                        await client.get(
                            f"/projects/{project}/usage.csv",
                            params={"period": "24h", "section": "time"},
                        )
                    ).text
                )
            )
        )
        assert len(series) == 24
        assert sum(int(r["requests"]) for r in series) == 4

        wrong = await client.get(
            usage_url, params={"period": "custom", "start": "2026-05-02", "end": "2026-05-01"}
        )
        assert wrong.status_code == 200
        assert 'id="period-error"' in wrong.text
        assert "Showing the last 7 days" in wrong.text
        assert (await client.get(f"/projects/{project}/usage.csv?section=nope")).status_code == 404


async def test_the_usage_page_survives_a_costs_outage(apis: Apis) -> None:
    transports = apis.transports()
    del transports["billing"]
    settings = console_settings(billing_url="http://127.0.0.1:9", api_timeout_s=2)
    async with (
        console_client(settings, transports) as client,
        apis.client(apis.keys) as keys,
    ):
        await sign_in(client)
        project = (await keys.post("/v1/projects", json={"name": "Outage"})).json()["id"]
        page = await client.get(f"/projects/{project}/usage")
        assert page.status_code == 200
        assert "Costs could not be loaded: The Costs API at http://127.0.0.1:9" in page.text
        assert totals(page.text)["requests"] == "0"
        exported = await client.get(f"/projects/{project}/usage.csv?section=cost")
        assert exported.status_code == 503  # no CSV of numbers it could not read


async def test_a_foreign_project_id_is_never_sent_on(apis: Apis) -> None:
    async with console_client(console_settings(), apis.transports()) as client:
        await sign_in(client)
        response = await client.get("/projects/proj%20x/usage")
        assert response.status_code == 404
        assert "No such project or key." in response.text
