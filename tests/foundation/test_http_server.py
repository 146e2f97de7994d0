"""The shared HTTP server edge: its settings, its refusals, and every service started with it
(its behaviour on real sockets: ``tests/gateway/test_http_limits.py``)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from uvicorn.importer import import_from_string

from deploy.system import SERVICES
from shared.http_limits import HttpSettings, http_settings, refusal
from shared.http_server import HttpProtocol

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_settings_come_from_one_prefix_for_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_HTTP_MAX_HEADER_BYTES", "65536")
    monkeypatch.setenv("TOLLGATE_HTTP_HEAD_TIMEOUT_S", "7.5")
    monkeypatch.setenv("TOLLGATE_HTTP_FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    read = HttpSettings()
    assert (read.max_header_bytes, read.head_timeout_s) == (65536, 7.5)
    assert read.forwarded_allow_ips == "10.0.0.0/8"
    assert http_settings() is http_settings(), "read once per process"


def test_defaults_are_sane_and_a_url_longer_than_the_head_is_refused() -> None:
    defaults = HttpSettings()
    assert defaults.max_url_bytes == 8192
    assert 32 * 1024 <= defaults.max_header_bytes <= 64 * 1024
    assert defaults.head_timeout_s <= 30
    assert defaults.forwarded_allow_ips == "", "no proxy believed unless listed"
    with pytest.raises(ValidationError, match="MAX_URL_BYTES"):
        HttpSettings(max_url_bytes=20_000, max_header_bytes=16_384)


def test_a_refusal_is_openais_error_and_closes() -> None:
    answer = refusal(503, "busy", "too_many_connections", [(b"server", b"t")], retry_after_s=1)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers == {
        b"server": b"t",
        b"content-type": b"application/json",
        b"content-length": b"%d" % len(body),
        b"retry-after": b"1",
        b"connection": b"close",
    }
    assert json.loads(body) == {
        "error": {
            "message": "busy",
            "type": "invalid_request_error",
            "code": "too_many_connections",
            "param": None,
        }
    }


def test_every_tollgate_service_is_started_with_the_shared_protocol() -> None:
    for service in SERVICES:
        if service.name == "upstream":
            continue  # the demo's stand-in for a model server
        assert service.http is not None, service.name
        assert issubclass(import_from_string(service.http), HttpProtocol), service.name
        assert service.argv[-2:] == ("--http", service.http), service.name
