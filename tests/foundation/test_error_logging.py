"""An unexpected failure is a 500 in OpenAI's shape and one log line, not a traceback per
request: the traceback once per place it happens, one line after that, and nothing for the
server to log again."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from shared.errors import install_error_handlers
from shared.http import RequestIdMiddleware

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)  # added after: the 500 must still carry the id

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("broken\nsecond line")

    @app.get("/other")
    async def other() -> None:
        raise KeyError("other")

    return app


async def test_unexpected_errors_are_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    # raise_app_exceptions: an exception that escaped the app (for the server to log with
    # its own traceback) would fail the request here.
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=True)
    with caplog.at_level(logging.ERROR):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = [await client.get("/boom") for _ in range(5)]
            answers.append(await client.get("/other"))
    for answer in answers:
        assert answer.status_code == 500
        assert answer.json() == {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "code": None,
                "param": None,
            }
        }
        assert answer.headers["x-request-id"].startswith("req_")
    records = [r for r in caplog.records if r.name == "shared.errors"]
    assert len(records) == 6
    with_traceback = [r.getMessage() for r in records if r.exc_info]
    assert len(with_traceback) == 2, "the traceback once per place, not per request"
    for record in records:
        assert "\n" not in record.getMessage()
    assert records[1].getMessage().startswith("unhandled RuntimeError at test_error_logging.py:")
    assert "'broken\\nsecond line'" in records[1].getMessage()
