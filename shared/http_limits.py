"""What the HTTP server edge of every service allows a client (``TOLLGATE_HTTP_*``), and the
answers it refuses with.

One prefix for all services: the limits are the server's, not a service's. Read once per
process (``http_settings``); a test hands its own to ``HttpProtocol.configured``.
"""

from __future__ import annotations

import functools
import http
import json
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import error_body


class HttpSettings(BaseSettings):
    """Bounds on what one client may send or hold open, for every service's HTTP server."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_HTTP_", extra="ignore", frozen=True)

    max_url_bytes: int = Field(
        8192, ge=256, description="longest request target; past it: 414, then close"
    )
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        description="longest request head (request line and headers); past it: 431, then close",
    )
    head_timeout_s: float = Field(
        20.0,
        gt=0,
        description="time for a whole request head, from a new connection or the head's first "
        "read; past it: 408 (or, if nothing came, the connection closed)",
    )
    min_body_rate: int = Field(
        240,
        ge=0,
        description="least average bytes/s of a request body after the grace (time the reading "
        "is paused because the app has not taken the body yet does not count); 0: no minimum",
    )
    body_grace_s: float = Field(5.0, ge=0, description="time a body gets before its rate is judged")
    max_connections: int = Field(
        10_000,
        ge=1,
        description="open connections per process; the one over gets 503, then close",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="addresses or networks (comma-separated, or *) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; none by default",
    )

    @model_validator(mode="after")
    def _url_fits_in_the_head(self) -> Self:
        if self.max_url_bytes > self.max_header_bytes:
            raise ValueError("MAX_URL_BYTES must be at most MAX_HEADER_BYTES")
        return self


@functools.cache
def http_settings() -> HttpSettings:
    """This process's HTTP limits, from the environment, read once."""
    return HttpSettings()


def refusal(
    status: int,
    message: str,
    code: str,
    default_headers: list[tuple[bytes, bytes]],
    *,
    error_type: str = "invalid_request_error",
    retry_after_s: int | None = None,
) -> bytes:
    """A whole answer of the server itself: OpenAI's error body, and ``connection: close``."""
    body = json.dumps(error_body(message, error_type, code)).encode()
    phrase = http.HTTPStatus(status).phrase.encode()
    lines = [b"HTTP/1.1 %d %b" % (status, phrase)]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: application/json", b"content-length: %d" % len(body)]
    if retry_after_s is not None:
        lines.append(b"retry-after: %d" % retry_after_s)
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
