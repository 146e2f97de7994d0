"""Key policies: stored, shown, patched field by field, and carried on every key state.

A project's policy rides on each of its keys' states; a project change re-publishes every
active key (``key.updated``, new versions) on keys.events and to the gateways' Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from services.keys import repository
from shared import apikeys
from shared.key_store import KeyStore
from tests.keys.harness import Running, by_key, read_topic
from tests.polling import eventually

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EMBEDDER = "Qwen/Qwen3-Embedding-0.6B"
POLICY: dict[str, Any] = {
    "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 100_000},
    "budget": {"limit_usd": "25.00", "period": "month"},
    "allowed_models": [MODEL, EMBEDDER],
    "allowed_endpoints": ["chat.completions", "models"],
}
NO_POLICY = dict.fromkeys(POLICY)


def policy_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {f: obj[f] for f in POLICY}


async def test_a_key_with_every_policy_field_reads_back_everywhere(
    keys: Running, redis_client: aioredis.Redis
) -> None:
    project = await keys.project()
    created = await keys.key(project, "limited", **POLICY)
    assert policy_of(created) == POLICY
    plain = await keys.key(project, "plain")
    assert policy_of(plain) == NO_POLICY

    base = f"/v1/projects/{project}/keys"
    got = (await keys.client.get(f"{base}/{created['id']}")).json()
    assert policy_of(got) == POLICY
    listed = (await keys.client.get(base)).json()["data"]
    assert [policy_of(k) for k in listed] == [POLICY, NO_POLICY]

    # The verify answer, the Redis mirror and the topic all carry the same state.
    state = (await keys.verify(apikeys.hash_key(created["key"]))).json()
    assert policy_of(state) == POLICY
    assert (state["project_rate_limits"], state["project_budget"]) == (None, None)
    held = await KeyStore(redis_client, keys.settings.redis_prefix).state(created["id"])
    assert held is not None
    assert held.model_dump(mode="json") == state
    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 2)
    events = by_key(records)
    assert events[created["id"]][0].state().model_dump(mode="json") == state


async def test_amounts_are_shown_as_given_in_plain_notation(keys: Running) -> None:
    project = await keys.project()
    for given, shown in (("25.00", "25.00"), ("1e2", "100"), (" 0.000001 ", "0.000001"), (7, "7")):
        key = await keys.key(project, budget={"limit_usd": given, "period": "day"})
        assert key["budget"] == {"limit_usd": shown, "period": "day"}, given
    # A rate_limits object with neither limit is no rate limit.
    key = await keys.key(project, rate_limits={})
    assert key["rate_limits"] is None
    key = await keys.key(project, rate_limits={"tokens_per_minute": 5})
    assert key["rate_limits"] == {"requests_per_minute": None, "tokens_per_minute": 5}


async def test_patch_sets_each_field_null_removes_absent_keeps(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project()
    key = await keys.key(project, "k")
    one = f"/v1/projects/{project}/keys/{key['id']}"
    expected = {"name": "k"} | NO_POLICY

    async def patch(body: dict[str, Any]) -> dict[str, Any]:
        answer = await keys.client.patch(one, json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    version = 1
    for field, value in POLICY.items():
        answer = await patch({field: value})
        expected[field] = value
        version += 1
        assert {f: answer[f] for f in expected} == expected, field
    for field in POLICY:
        answer = await patch({field: None})
        expected[field] = None
        version += 1
        assert {f: answer[f] for f in expected} == expected, field
    # Several at once, the name too; then a rate limit replaced whole.
    answer = await patch({"name": "k2", **POLICY})
    expected |= {"name": "k2", **POLICY}
    answer = await patch({"rate_limits": {"requests_per_minute": 5}})
    expected["rate_limits"] = {"requests_per_minute": 5, "tokens_per_minute": None}
    version += 2
    assert {f: answer[f] for f in expected} == expected
    got = (await keys.client.get(one)).json()
    assert {f: got[f] for f in expected} == expected

    # No change, no event: an empty body, or the same values again.
    await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
    published = keys.app.state.relay.published
    await patch({})
    await patch({"name": "k2", "allowed_models": POLICY["allowed_models"]})
    await patch({"budget": {"limit_usd": "25.00", "period": "month"}})
    assert keys.app.state.relay.published == published
    assert await repository.outbox_backlog(db) == 0

    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, version)
    history = by_key(records)[key["id"]]
    assert [e.version for e in history] == list(range(1, version + 1))
    assert {e.type for e in history[1:]} == {"key.updated"}
    last = history[-1].state().model_dump(mode="json")
    assert {f: last[f] for f in POLICY} == {f: expected[f] for f in POLICY}
    assert last == (await keys.verify(apikeys.hash_key(key["key"]))).json()


async def test_a_revoked_key_cannot_be_patched(keys: Running) -> None:
    project = await keys.project()
    key = await keys.key(project)
    one = f"/v1/projects/{project}/keys/{key['id']}"
    await keys.client.delete(one)
    answer = await keys.client.patch(one, json={"budget": None})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "key_revoked"


async def test_a_project_change_republishes_its_active_keys(
    keys: Running, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    project = await keys.project("p")
    other = await keys.project("other")
    a = await keys.key(project, "a", rate_limits={"requests_per_minute": 10})
    b = await keys.key(project, "b")
    gone = await keys.key(project, "gone")
    bystander = await keys.key(other, "x")
    base = f"/v1/projects/{project}/keys"
    await keys.client.delete(f"{base}/{gone['id']}")
    await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 5)

    limits = {"requests_per_minute": 1000, "tokens_per_minute": 50_000}
    budget = {"limit_usd": "100.00", "period": "day"}
    answer = await keys.client.patch(
        f"/v1/projects/{project}", json={"rate_limits": limits, "budget": budget}
    )
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert (shown["name"], shown["rate_limits"], shown["budget"]) == ("p", limits, budget)
    assert (await keys.client.get(f"/v1/projects/{project}")).json() == shown
    listed = (await keys.client.get("/v1/projects")).json()["data"]
    assert [(p["rate_limits"], p["budget"]) for p in listed] == [(limits, budget), (None, None)]

    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 7)
    events = by_key(records)
    for key, own in ((a, {"requests_per_minute": 10, "tokens_per_minute": None}), (b, None)):
        last = events[key["id"]][-1]
        assert (last.type, last.version) == ("key.updated", 2)
        state = last.state().model_dump(mode="json")
        assert (state["project_rate_limits"], state["project_budget"]) == (limits, budget)
        assert state["rate_limits"] == own  # the key's own limits stay its own
        assert state == (await keys.verify(apikeys.hash_key(key["key"]))).json()
        held = await KeyStore(redis_client, keys.settings.redis_prefix).state(key["id"])
        assert held is not None
        assert held.model_dump(mode="json") == state
    # The revoked key and the other project's key are not re-published.
    assert [e.type for e in events[gone["id"]]] == ["key.created", "key.revoked"]
    assert [e.type for e in events[bystander["id"]]] == ["key.created"]

    # A key created later, or changed later, carries the project's policy too.
    c = await keys.key(project, "c")
    state = (await keys.verify(apikeys.hash_key(c["key"]))).json()
    assert (state["project_rate_limits"], state["project_budget"]) == (limits, budget)
    await keys.client.patch(f"{base}/{a['id']}", json={"name": "a2"})
    state = (await keys.verify(apikeys.hash_key(a["key"]))).json()
    assert (state["version"], state["project_budget"]) == (3, budget)

    # A rename alone, or the same policy again, re-publishes nothing; null removes.
    await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
    published = keys.app.state.relay.published
    answer = await keys.client.patch(f"/v1/projects/{project}", json={"name": "renamed"})
    assert answer.json()["name"] == "renamed"
    await keys.client.patch(f"/v1/projects/{project}", json={"budget": budget})
    assert keys.app.state.relay.published == published
    answer = await keys.client.patch(f"/v1/projects/{project}", json={"budget": None})
    assert (answer.json()["budget"], answer.json()["rate_limits"]) == (None, limits)
    state = (await keys.verify(apikeys.hash_key(b["key"]))).json()
    assert (state["version"], state["project_budget"]) == (3, None)
    assert state["project_rate_limits"] == limits


async def test_refusals_name_the_value_at_fault(keys: Running) -> None:
    project = await keys.project()
    base = f"/v1/projects/{project}/keys"
    answer = await keys.client.post(base, json={"name": "a", "allowed_models": [MODEL, "gpt-9"]})
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("allowed_models", "model_not_found")
    assert "'gpt-9'" in error["message"]
    answer = await keys.client.post(base, json={"name": "a", "allowed_endpoints": ["models", "x"]})
    error = answer.json()["error"]
    assert error["param"] == "allowed_endpoints"
    assert "item 2 'x'" in error["message"]


async def test_every_policy_field_is_documented_in_the_openapi(keys: Running) -> None:
    schemas = (await keys.client.get("/openapi.json")).json()["components"]["schemas"]
    fields = {
        "CreateKey": POLICY,
        "UpdateKey": POLICY,
        "ApiKey": POLICY,
        "ApiKeyWithSecret": POLICY,
        "UpdateProject": ("rate_limits", "budget"),
        "Project": ("rate_limits", "budget"),
    }
    for schema, names in fields.items():
        for name in names:
            prop = schemas[schema]["properties"][name]
            assert prop.get("description"), (schema, name)
            assert prop.get("examples"), (schema, name)
    nested = [s for n, s in schemas.items() if n.startswith(("RateLimits", "Budget"))]
    assert len(nested) >= 3
    for schema in nested:
        for name, prop in schema["properties"].items():
            assert prop.get("description"), name
            assert prop.get("examples"), name


async def test_racing_project_and_key_changes_end_on_the_newest_project_policy(
    keys: Running,
) -> None:
    project = await keys.project()
    a = await keys.key(project, "a")
    b = await keys.key(project, "b")
    base = f"/v1/projects/{project}/keys"
    calls = []
    for i in range(1, 9):
        budget = {"limit_usd": str(i), "period": "day"}
        limits = {"rate_limits": {"requests_per_minute": i}}
        calls += [
            keys.client.patch(f"/v1/projects/{project}", json={"budget": budget}),
            keys.client.patch(f"{base}/{a['id']}", json=limits),
            keys.client.patch(f"{base}/{b['id']}", json=limits),
            keys.client.post(f"{base}/{(a, b)[i % 2]['id']}/default"),
        ]
    answers = await asyncio.gather(*calls)
    assert [r.status_code for r in answers] == [200] * len(answers)  # no deadlock, no 503
    final = (await keys.client.get(f"/v1/projects/{project}")).json()["budget"]
    for key in (a, b):
        state = (await keys.verify(apikeys.hash_key(key["key"]))).json()
        assert state["project_budget"] == final
    await eventually(
        lambda: _last_budgets(keys), until=lambda got: got == [final, final], what="last events"
    )


async def _last_budgets(keys: Running) -> list[Any]:
    records = await read_topic(keys.settings.kafka_bootstrap, keys.settings.keys_topic, 1)
    events = by_key(records)
    out = []
    for history in events.values():
        versions = [e.version for e in history]
        assert versions == sorted(versions)
        last = history[-1].state().model_dump(mode="json")
        out.append(last["project_budget"])
    return out
