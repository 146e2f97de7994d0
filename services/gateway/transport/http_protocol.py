"""uvicorn's HTTP/1.1 protocol with a lean exchange for the proxied calls.

``uvicorn ... --http services.gateway.transport.http_protocol:GatewayProtocol``. It builds on
``shared.http_server.HttpProtocol``, the one every service runs (bounded heads, timed heads
and bodies, the connection limit, the Host check, the keep-alive timer armed once per idle
spell). uvicorn keeps all that makes it a server: sockets, lifespan, signals, graceful
shutdown, the parser (llhttp), 400s, pipelining, upgrades, and every route but the proxied
ones. A ``POST`` to a proxied path, the gateway's hot path, runs in a ``LeanExchange`` instead
of uvicorn's request cycle:

- no ``asyncio.Event`` per request, and no proxy-headers middleware (the proxied routes never
  read the client address or scheme it rewrites);
- header names and values checked with one pattern search each over the whole block, not two
  per header;
- a whole answer (one with ``content-length``) written with its head in one ``write``: one
  loopback send instead of two; a stream's head still goes out at once;
- an answer given before a ``100 Continue`` went out, while the body is still to come, closes
  the connection after it (as the shared protocol does for uvicorn's cycle).

What reaches the app and the bytes on the wire are uvicorn's. Measured against stock uvicorn
(two gateways in one run, alternating rounds at 50 clients, medians): gateway CPU per request
0.292 -> 0.272 ms (chat, ten rounds of 3,000), 0.393 -> 0.370 ms (stream, eight of 2,000).
It leans on uvicorn's protocol internals (uvicorn is pinned in uv.lock);
``tests/gateway/test_http_protocol.py`` checks the behaviour on real sockets against stock
uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGI3Application, ASGIReceiveEvent, ASGISendEvent
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)

from services.gateway.transport.asgi import PROXIED
from shared.http_server import IDLE, HttpProtocol

PROXIED_URLS = frozenset(path.encode() for path in PROXIED)

log = logging.getLogger("uvicorn.error")


def _nothing() -> None:
    return None


class Wakeup:
    """What the protocol sets when body came, the request ended or the client left: wakes the
    ``receive`` calls waiting. Its own object, so an exchange holds no reference to itself
    (it is freed when its last reference goes, not at the next garbage collection)."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class LeanExchange:
    """One proxied request and its answer.

    The protocol treats it as uvicorn's cycle: it fills ``body`` and ``more_body``, calls
    ``message_event.set()`` when either changed or the client left, and reads or sets
    ``disconnected``, ``response_complete`` and ``keep_alive`` (a graceful shutdown clears it)."""

    def __init__(
        self,
        scope: dict[str, Any],
        transport: asyncio.Transport,
        *,
        flow: FlowControl,
        default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.waiting_for_100_continue = expect_100_continue
        self.keep_alive = keep_alive
        self.on_response = on_response
        self.message_event = Wakeup()
        self.disconnected = False
        self.body = bytearray()
        self.more_body = True
        self._last_given = False  # the app has had the request's last body message
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding = False
        self.expected_content_length = 0
        self._head: bytes | None = None  # a whole answer's head, written with its body

    async def run(self, app: ASGI3Application) -> None:
        try:
            await app(self.scope, self.receive, self.send)  # type: ignore[arg-type]
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)  # noqa: TRY400 (exc_info given)
            if not self.response_started:
                await self._server_error()
            else:
                self.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._server_error()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = _nothing

    async def _server_error(self) -> None:
        """uvicorn's own 500: plain text, and the connection closed after it."""
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send(
            {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
        )

    async def receive(self) -> ASGIReceiveEvent:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        while (
            not (self.disconnected or self.response_complete)
            and not self.body
            and (self.more_body or self._last_given)
        ):
            self.flow.resume_reading()
            waiter = asyncio.get_running_loop().create_future()
            self.message_event.waiters.append(waiter)
            await waiter
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        self._last_given = not self.more_body
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # a slow client: the app waits, nothing piles up here
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', got '{message['type']}'.")
            self._start(message["status"], list(message.get("headers", ())))
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected '{message['type']}' after the response completed.")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', got '{message['type']}'.")
        more_body = bool(message.get("more_body", False))
        content = self._framed(bytes(message.get("body", b"")), more_body)
        if self._head is not None:
            content, self._head = self._head + content, None
        if content:
            self.transport.write(content)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _framed(self, body: bytes, more_body: bool) -> bytes:
        """A body message as it goes on the wire: as a chunk, or counted against its length."""
        if self.chunked_encoding:
            content = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            return content if more_body else content + b"0\r\n\r\n"
        if len(body) > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        self.expected_content_length -= len(body)
        return body

    def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.response_started = True
        if self.waiting_for_100_continue and self.more_body:
            # Answered before the 100 went out: whatever the client sends next may be the body
            # or its next request, and cannot be told apart. Closed after the answer.
            self.keep_alive = False
        self.waiting_for_100_continue = False
        if HEADER_RE.search(b"".join(name for name, _ in headers)):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"\t".join(value for _, value in headers)):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            content += (name, b": ", value, b"\r\n")
        length: int | None = None
        closing = False
        for raw_name, value in headers:
            name = raw_name.lower()
            if name == b"content-length" and not self.chunked_encoding:
                length = int(value.decode())
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                length = None
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                closing = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        if length is None and not self.chunked_encoding and status not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        head = b"".join(content)
        if length is None:
            self.transport.write(head)  # a stream: its head now, its events as they come
        else:
            self.expected_content_length = length
            self._head = head


class GatewayProtocol(HttpProtocol):
    """The shared protocol (bounds, timers, Host check); proxied calls run in a
    ``LeanExchange``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        self.proxied_app = app.app if isinstance(app, ProxyHeadersMiddleware) else app
        self.exchange: LeanExchange | None = None  # the request being parsed, when proxied

    def on_headers_complete(self) -> None:
        self._admit_head()
        parser = self.parser
        if (
            self.url not in PROXIED_URLS
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
            or self.limit_concurrency is not None
            or self.config.reset_contextvars
            or self.root_path
            or (self.cycle is not None and not self.cycle.response_complete)  # pipelined
        ):
            self.exchange = None
            HttpToolsProtocol.on_headers_complete(self)
            return
        scope = self.scope
        scope["method"] = "POST"
        scope["path"] = self.url.decode("ascii")
        scope["raw_path"] = self.url
        scope["query_string"] = b""
        exchange = LeanExchange(
            scope,  # type: ignore[arg-type]
            self.transport,
            flow=self.flow,
            default_headers=self.server_state.default_headers,
            expect_100_continue=self.expect_100_continue,
            keep_alive=parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        self.exchange = exchange
        self.cycle = exchange  # type: ignore[assignment]
        task = self.loop.create_task(exchange.run(self.proxied_app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            super().on_body(body)
        elif not exchange.response_complete:
            exchange.body += body
            if len(exchange.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()  # until the app reads it
            exchange.message_event.set()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            super().on_message_complete()
            return
        self._phase = IDLE
        self._head_room = self._max_head
        if not exchange.response_complete:
            exchange.more_body = False
            exchange.message_event.set()
