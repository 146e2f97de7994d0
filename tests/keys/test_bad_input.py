"""Bad input: a clear 4xx in OpenAI's error shape, and nothing changed (rows nor events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.keys import repository
from tests.keys.harness import Running, dump
from tests.polling import eventually

PAST = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


@dataclass(frozen=True)
class Case:
    """One bad request and the answer it must get."""

    what: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    param: str | None = None
    code: str | None = None


def cases(project: str, key: str, revoked: str) -> list[Case]:
    keys = f"/v1/projects/{project}/keys"
    one = f"{keys}/{key}"
    gone = f"{keys}/{revoked}"
    return [
        Case("empty project name", "POST", "/v1/projects", {"name": ""}, param="name"),
        Case("blank project name", "POST", "/v1/projects", {"name": "   "}, param="name"),
        Case("overlong project name", "POST", "/v1/projects", {"name": "x" * 65}, param="name"),
        Case("project name missing", "POST", "/v1/projects", {}, param="name"),
        Case("project name a number", "POST", "/v1/projects", {"name": 7}, param="name"),
        Case("project malformed JSON", "POST", "/v1/projects", raw=b'{"name": "a"'),
        Case("project body a list", "POST", "/v1/projects", ["a"]),
        Case("project unknown field", "POST", "/v1/projects", {"name": "a", "x": 1}, param="x"),
        Case("unknown project", "GET", "/v1/projects/proj_nope", status=404, param="project_id"),
        Case("empty key name", "POST", keys, {"name": ""}, param="name"),
        Case("blank key name", "POST", keys, {"name": " \t "}, param="name"),
        Case("overlong key name", "POST", keys, {"name": "k" * 65}, param="name"),
        Case("control character in name", "POST", keys, {"name": "a\nb"}, param="name"),
        Case("NUL in name", "POST", keys, {"name": "a\u0000b"}, param="name"),
        # A lone surrogate: stdlib JSON takes it, PostgreSQL's UTF-8 cannot hold it.
        Case("lone surrogate in name", "POST", keys, raw=b'{"name": "a\\ud800b"}', param="name"),
        Case("lone surrogate in project", "POST", "/v1/projects", raw=b'{"name": "\\udfff"}'),
        Case("key name null", "POST", keys, {"name": None}, param="name"),
        Case("key name a list", "POST", keys, {"name": ["a"]}, param="name"),
        Case("key malformed JSON", "POST", keys, raw=b"name=a"),
        Case(
            "expires_at in the past",
            "POST",
            keys,
            {"name": "a", "expires_at": PAST},
            param="expires_at",
            code="invalid_expires_at",
        ),
        Case(
            "expires_at not a time",
            "POST",
            keys,
            {"name": "a", "expires_at": "soon"},
            param="expires_at",
        ),
        Case(
            "expires_at without timezone",
            "POST",
            keys,
            {"name": "a", "expires_at": "2099-01-01T00:00:00"},
            param="expires_at",
        ),
        Case(
            "key under unknown project",
            "POST",
            "/v1/projects/proj_nope/keys",
            {"name": "a"},
            status=404,
        ),
        Case("list under unknown project", "GET", "/v1/projects/proj_nope/keys", status=404),
        Case("list limit 0", "GET", f"{keys}?limit=0", param="limit"),
        Case("list limit 101", "GET", f"{keys}?limit=101", param="limit"),
        Case("list limit not a number", "GET", f"{keys}?limit=ten", param="limit"),
        Case("list after an unknown key", "GET", f"{keys}?after=key_nope", param="after"),
        Case("projects after unknown", "GET", "/v1/projects?after=proj_nope", param="after"),
        Case("unknown key", "GET", f"{keys}/key_nope", status=404, param="key_id"),
        Case("rename blank", "PATCH", one, {"name": "  "}, param="name"),
        Case("rename overlong", "PATCH", one, {"name": "n" * 65}, param="name"),
        Case("rename wrong type", "PATCH", one, {"name": 12}, param="name"),
        Case("rename lone surrogate", "PATCH", one, raw=b'{"name": "x\\udbff"}', param="name"),
        Case("rename unknown key", "PATCH", f"{keys}/key_nope", {"name": "a"}, status=404),
        Case("rename revoked key", "PATCH", gone, {"name": "a"}, status=409, code="key_revoked"),
        Case("default unknown key", "POST", f"{keys}/key_nope/default", status=404),
        Case("default revoked key", "POST", f"{gone}/default", status=409, code="key_revoked"),
        Case("rotate revoked key", "POST", f"{gone}/rotate", status=409, code="key_revoked"),
        Case("rotate unknown key", "POST", f"{keys}/key_nope/rotate", status=404),
        Case(
            "grace negative",
            "POST",
            f"{one}/rotate",
            {"grace_period_seconds": -1},
            param="grace_period_seconds",
        ),
        Case(
            "grace a string",
            "POST",
            f"{one}/rotate",
            {"grace_period_seconds": "60"},
            param="grace_period_seconds",
        ),
        Case(
            "grace a boolean",
            "POST",
            f"{one}/rotate",
            {"grace_period_seconds": True},
            param="grace_period_seconds",
        ),
        Case(
            "grace too long",
            "POST",
            f"{one}/rotate",
            {"grace_period_seconds": 10**9},
            param="grace_period_seconds",
            code="invalid_grace_period",
        ),
        Case("rotate malformed JSON", "POST", f"{one}/rotate", raw=b"{grace"),
        Case("revoke twice", "DELETE", gone, status=409, code="key_revoked"),
        Case("revoke unknown key", "DELETE", f"{keys}/key_nope", status=404),
        Case("patch name null", "PATCH", one, {"name": None}, param="name"),
        Case("patch unknown field", "PATCH", one, {"rpm": 5}, param="rpm"),
        Case("patch policy of revoked", "PATCH", gone, {"budget": None}, status=409),
        Case("project patch unknown", "PATCH", "/v1/projects/proj_nope", {}, status=404),
        Case("project name null", "PATCH", f"/v1/projects/{project}", {"name": None}),
        Case("project name blank", "PATCH", f"/v1/projects/{project}", {"name": " "}),
        *policy_cases(f"/v1/projects/{project}", keys, one),
    ]


RATE_OK = {"requests_per_minute": 60}
BUDGET_OK = {"limit_usd": "25.00", "period": "month"}
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def policy_cases(project: str, keys: str, one: str) -> list[Case]:
    """Each bad policy value, on key create, key PATCH and (rates, budgets) project PATCH."""
    rpm, tpm = "rate_limits.requests_per_minute", "rate_limits.tokens_per_minute"
    usd, period = "budget.limit_usd", "budget.period"
    shared: list[tuple[str, dict[str, Any], str]] = [
        ("rpm zero", {"rate_limits": {"requests_per_minute": 0}}, rpm),
        ("rpm negative", {"rate_limits": {"requests_per_minute": -5}}, rpm),
        ("rpm a float", {"rate_limits": {"requests_per_minute": 1.5}}, rpm),
        ("rpm a string", {"rate_limits": {"requests_per_minute": "600"}}, rpm),
        ("rpm a boolean", {"rate_limits": {"requests_per_minute": True}}, rpm),
        ("rpm huge", {"rate_limits": {"requests_per_minute": 10**10}}, rpm),
        ("tpm zero", {"rate_limits": {"tokens_per_minute": 0}}, tpm),
        ("tpm negative", {"rate_limits": {"tokens_per_minute": -1}}, tpm),
        (
            "rate unknown",
            {"rate_limits": {"requests_per_hour": 5}},
            "rate_limits.requests_per_hour",
        ),
        ("rate a number", {"rate_limits": 600}, "rate_limits"),
        ("budget zero", {"budget": {"limit_usd": "0", "period": "day"}}, usd),
        ("budget negative", {"budget": {"limit_usd": "-1.00", "period": "day"}}, usd),
        ("budget a float", {"budget": {"limit_usd": 25.5, "period": "day"}}, usd),
        ("budget malformed", {"budget": {"limit_usd": "25,00", "period": "day"}}, usd),
        ("budget words", {"budget": {"limit_usd": "ten dollars", "period": "day"}}, usd),
        ("budget NaN", {"budget": {"limit_usd": "NaN", "period": "day"}}, usd),
        ("budget infinite", {"budget": {"limit_usd": "Infinity", "period": "day"}}, usd),
        ("budget 7 places", {"budget": {"limit_usd": "0.0000001", "period": "day"}}, usd),
        ("budget too big", {"budget": {"limit_usd": "1e12", "period": "day"}}, usd),
        ("budget boolean", {"budget": {"limit_usd": True, "period": "day"}}, usd),
        ("budget no amount", {"budget": {"period": "day"}}, usd),
        ("budget bad period", {"budget": {"limit_usd": "5", "period": "week"}}, period),
        ("budget no period", {"budget": {"limit_usd": "5"}}, period),
        ("budget a string", {"budget": "25/month"}, "budget"),
    ]
    scopes: list[tuple[str, dict[str, Any], str]] = [
        ("models empty", {"allowed_models": []}, "allowed_models"),
        ("models unknown", {"allowed_models": [MODEL, "gpt-9"]}, "allowed_models"),
        ("models duplicate", {"allowed_models": [MODEL, MODEL]}, "allowed_models"),
        ("models a string", {"allowed_models": MODEL}, "allowed_models"),
        ("models blank id", {"allowed_models": [""]}, "allowed_models"),
        ("models a number", {"allowed_models": [7]}, "allowed_models"),
        ("endpoints empty", {"allowed_endpoints": []}, "allowed_endpoints"),
        ("endpoints unknown", {"allowed_endpoints": ["chat"]}, "allowed_endpoints"),
        ("endpoints duplicate", {"allowed_endpoints": ["models", "models"]}, "allowed_endpoints"),
        ("endpoints path", {"allowed_endpoints": ["/v1/models"]}, "allowed_endpoints"),
    ]
    out: list[Case] = []
    for what, body, param in [*shared, *scopes]:
        out.append(Case(f"create: {what}", "POST", keys, {"name": "a", **body}, param=param))
        out.append(Case(f"patch: {what}", "PATCH", one, body, param=param))
    for what, body, param in shared:
        out.append(Case(f"project: {what}", "PATCH", project, body, param=param))
    out.append(
        Case(
            "project: no scopes",
            "PATCH",
            project,
            {"allowed_models": [MODEL]},
            param="allowed_models",
        )
    )
    return out


async def _quiet(keys: Running, db: asyncpg.Connection) -> dict[str, list[str]]:
    """The schema's rows once the relay has published everything."""
    await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
    return await dump(db, keys.settings.db_schema)


async def test_bad_input_is_refused_and_changes_nothing(
    keys: Running, db: asyncpg.Connection
) -> None:
    project = await keys.project("p")
    key = await keys.key(project, "k")
    revoked = await keys.key(project, "r")
    await keys.client.delete(f"/v1/projects/{project}/keys/{revoked['id']}")
    before = await _quiet(keys, db)
    published = keys.app.state.relay.published

    for case in cases(project, key["id"], revoked["id"]):
        if case.raw is not None:
            answer = await keys.client.request(
                case.method,
                case.path,
                content=case.raw,
                headers={"content-type": "application/json"},
            )
        else:
            answer = await keys.client.request(case.method, case.path, json=case.body)
        assert answer.status_code == case.status, (case.what, answer.text)
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}, case.what
        assert error["type"] == "invalid_request_error", case.what
        assert isinstance(error["message"], str), case.what
        assert len(error["message"]) > 10, case.what
        if case.param is not None:
            assert error["param"] == case.param, (case.what, error)
        if case.code is not None:
            assert error["code"] == case.code, (case.what, error)

    assert await _quiet(keys, db) == before
    assert keys.app.state.relay.published == published
