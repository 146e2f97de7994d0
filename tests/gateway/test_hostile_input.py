"""Hostile bodies through the real gateway on the real stack: a 4xx in OpenAI's shape, no
traceback, the same keep-alive connection goes on working, the usage event carries the
catalogue id or ``UNKNOWN_MODEL`` (never the client's string), and the real metering and
billing consumers count every later good request exactly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.stack import Endpoints
from shared.events import UNKNOWN_MODEL
from tests.gateway.conftest import StartGateway
from tests.gateway.counted import Ledger, assert_counted_exactly, captured_logs, loud
from tests.gateway.harness import CHAT, EMBED, FakeKeyService, new_key, usage_events
from tests.served import Served

MESSAGES = [{"role": "user", "content": "hi"}]
DEEP = 50_000
SAFE_ID = re.compile(r"req_[A-Za-z0-9]{20}")


def _body(**fields: Any) -> bytes:
    return json.dumps({"messages": MESSAGES, **fields}).encode()


@dataclass(frozen=True)
class Hostile:
    """One hostile body, the answer it must get and the model its usage event must carry."""

    what: str
    body: bytes
    status: int = 400
    model: str = UNKNOWN_MODEL
    param: str | None = None
    code: str | None = None


CHAT_B = CHAT.encode()
HOSTILE = [
    Hostile("invalid UTF-8 in the model", b'{"model": "\xff\xfe", "messages": []}'),
    Hostile("invalid UTF-8 in a message", b'{"model": "%s", "x": "\xc3\x28"}' % CHAT_B),
    Hostile("a UTF-16 body", json.dumps({"model": CHAT}).encode("utf-16")),
    Hostile("lone surrogate in the model", b'{"model": "a\\ud800b", "messages": []}'),
    Hostile("lone surrogate in a message", b'{"model": "%s", "x": "y\\udc00"}' % CHAT_B),
    Hostile("half a surrogate pair", b'{"model": "%s", "x": "\\ud83d!"}' % CHAT_B),
    Hostile("50,000 nested arrays", b'{"model": "x", "m": %s}' % (b"[" * DEEP + b"]" * DEEP)),
    Hostile("50,000 nested objects", b'{"m": %s1%s}' % (b'{"a":' * DEEP, b"}" * DEEP)),
    # Readable, but too deep to write again for the upstream's own model name.
    Hostile(
        "300 nested arrays in a body the gateway rewrites",
        b'{"model": "test/no-usage", "m": %s}' % (b"[" * 300 + b"]" * 300),
        model="test/no-usage",
    ),
    Hostile("NaN", b'{"model": "%s", "temperature": NaN}' % CHAT_B),
    Hostile("model a number", _body(model=7), param="model", code="invalid_type"),
    Hostile("model a decimal", _body(model=1.5), param="model", code="invalid_type"),
    Hostile("model a boolean", _body(model=True), param="model", code="invalid_type"),
    Hostile("model a list", _body(model=[CHAT]), param="model", code="invalid_type"),
    Hostile("model an object", _body(model={"id": CHAT}), param="model", code="invalid_type"),
    Hostile("model null", _body(model=None), param="model"),
    Hostile("model empty", _body(model=""), param="model"),
    Hostile("model missing", _body(), param="model"),
    Hostile("body a list", b"[1, 2]"),
    Hostile("body a string", b'"model"'),
    Hostile("body a number", b"42"),
    Hostile("body null", b"null"),
    Hostile("empty body", b""),
    Hostile("NUL in the model", _body(model="x\x00y"), 404, param="model", code="model_not_found"),
    Hostile(
        "terminal escapes in the model",
        _body(model="\x1b[2J\x1b[31mred\u202e"),
        404,
        param="model",
        code="model_not_found",
    ),
    Hostile(
        "a model name of 1 MB",
        _body(model="m" * 1_000_000),
        404,
        param="model",
        code="model_not_found",
    ),
    Hostile("wrong kind of model", _body(model=EMBED), model=EMBED, code="model_not_supported"),
]


def _connection(answer: httpx.Response) -> object:
    """The client side address of the connection that carried answer."""
    return answer.extensions["network_stream"].get_extra_info("client_addr")


def _one_connection(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=url, timeout=60, limits=limits)


def _assert_openai_error(answer: httpx.Response, case: Hostile) -> None:
    assert answer.status_code == case.status, (case.what, answer.text[:300])
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}, case.what
    assert error["type"] == "invalid_request_error", case.what
    if case.param is not None:
        assert error["param"] == case.param, (case.what, error)
    if case.code is not None:
        assert error["code"] == case.code, (case.what, error)
    # Never an unbounded echo of the client's string, never a control character.
    assert 10 < len(error["message"]) <= 300, (case.what, error["message"][:400])
    assert error["message"].isprintable(), (case.what, error["message"])


async def test_hostile_bodies_are_refused_and_everything_is_still_counted(
    *,
    make_gateway: StartGateway,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    schemas: tuple[str, str],
    catalogue: Path,
    unique: str,
) -> None:
    gateway = await make_gateway()
    secret_a, key_a = new_key(project=f"proj_a{unique}")
    secret_b, key_b = new_key(project=f"proj_b{unique}")
    for state in (key_a, key_b):
        keyservice[0].add(state)
    auth = {
        key_a.key_id: {"Authorization": f"Bearer {secret_a}", "content-type": "application/json"},
        key_b.key_id: {"Authorization": f"Bearer {secret_b}", "content-type": "application/json"},
    }
    want = Ledger.empty()
    connections = set()
    with captured_logs() as logs:
        async with _one_connection(gateway.url) as client:
            for i, case in enumerate(HOSTILE):
                headers = {**auth[key_a.key_id], "x-request-id": f"hostile-{i}"}
                answer = await client.post(
                    "/v1/chat/completions", content=case.body, headers=headers
                )
                _assert_openai_error(answer, case)
                connections.add(_connection(answer))
                want.refused(key_a.project_id, key_a.key_id, case.model)
                # The same connection goes on: good requests from the same key and another
                # project's key are answered, and counted exactly.
                for state in (key_a, key_b):
                    good = await client.post(
                        "/v1/chat/completions",
                        json={"model": CHAT, "messages": [{"role": "user", "content": f"n{i}"}]},
                        headers={**auth[state.key_id], "x-request-id": f"good-{i}-{state.key_id}"},
                    )
                    assert good.status_code == 200, (case.what, good.text)
                    connections.add(_connection(good))
                    want.answered(state.project_id, state.key_id, good.json()["usage"])
    assert len(connections) == 1, "every answer came on the one keep-alive connection"
    assert not loud(logs)

    total = 3 * len(HOSTILE)
    events = {
        e.request_id: e
        for e in await usage_events(endpoints.kafka_bootstrap, topic_prefix, total, timeout=60)
    }
    assert len(events) == total
    for i, case in enumerate(HOSTILE):
        event = events[f"hostile-{i}"]
        assert (event.model, event.status_code, event.key_id) == (
            case.model,
            case.status,
            key_a.key_id,
        ), case.what
        assert (event.input_tokens, event.output_tokens) == (0, 0), case.what
    assert {e.model for e in events.values()} <= {CHAT, EMBED, "test/no-usage", UNKNOWN_MODEL}

    await assert_counted_exactly(
        endpoints=endpoints,
        prefix=topic_prefix,
        schemas=schemas,
        catalogue=catalogue,
        unique=unique,
        want=want,
    )


@pytest.mark.parametrize(
    "given",
    # (Controls never get this far: the HTTP parser refuses them in a header.)
    [b"x" * 8000, b"caf\xc3\xa9", b"a b", b"../../etc/passwd;rm", b"r" * 129, b"a\tb"],
)
async def test_an_odd_request_id_is_replaced_on_answer_and_event(
    gateway: Served,
    keyservice: tuple[FakeKeyService, Served],
    endpoints: Endpoints,
    topic_prefix: str,
    given: bytes,
) -> None:
    secret, state = new_key()
    keyservice[0].add(state)
    headers = [(b"authorization", f"Bearer {secret}".encode()), (b"x-request-id", given)]
    sane = {"Authorization": f"Bearer {secret}", "x-request-id": "trace-01.A_b"}
    async with _one_connection(gateway.url) as client:
        odd = await client.post(
            "/v1/chat/completions", json={"model": CHAT, "messages": MESSAGES}, headers=headers
        )
        kept = await client.post(
            "/v1/chat/completions", json={"model": CHAT, "messages": MESSAGES}, headers=sane
        )
    assert (odd.status_code, kept.status_code) == (200, 200)
    assert SAFE_ID.fullmatch(odd.headers["x-request-id"])
    assert kept.headers["x-request-id"] == "trace-01.A_b"
    events = await usage_events(endpoints.kafka_bootstrap, topic_prefix, 2, timeout=60)
    assert sorted(e.request_id for e in events) == sorted(
        [odd.headers["x-request-id"], "trace-01.A_b"]
    )
