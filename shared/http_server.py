"""uvicorn's HTTP/1.1 protocol, bounded: what every Tollgate service serves with.

``uvicorn ... --http shared.http_server:HttpProtocol`` (the gateway's ``GatewayProtocol``
builds on it). Limits are ``shared.http_limits.HttpSettings`` (``TOLLGATE_HTTP_*``):

- a request target past ``max_url_bytes``: 414; a head past ``max_header_bytes``: 431. Bytes
  are counted as they go to the parser and the head is refused as soon as the count passes,
  so a refusal costs the same whatever was sent (httptools joins a header's pieces at a cost
  that grows with each one: 64 MiB of header took 4.3 s and stalled every other request);
- a whole head within ``head_timeout_s`` of a new connection or of its first read (408 if some
  came; a connection that sent nothing is closed), a body at ``min_body_rate`` bytes/s once
  ``body_grace_s`` passed (408); time the reading is paused because the app has not taken the
  body yet, or the client waits for a ``100 Continue``, is not counted;
- at most ``max_connections`` open per process: the one over gets 503 and ``retry-after``;
- an HTTP/1.1 request without exactly one ``Host``: 400;
- an answer given before its ``100 Continue`` went out, while the body is still to come: the
  connection closes after it (``connection: close``), so a body the client sends anyway is
  never read as its next request (stock uvicorn keeps the connection, and eats it);
- ``X-Forwarded-For`` and ``-Proto`` believed only from ``forwarded_allow_ips`` (none by
  default), whatever uvicorn's own ``--forwarded-allow-ips`` says.

Every refusal is OpenAI's error body with ``connection: close``, and the connection closes.

The hot path pays counters and flag checks: a request whose head and body come in one read
arms no timer. One timer per connection, armed when it opens and when a read leaves a head or
a body incomplete; when due it looks at what is pending. The keep-alive timer is armed once
per idle spell and, when due, looks at when data last came.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, ClassVar, Self

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shared.http_limits import HttpSettings, http_settings, refusal

# Where a connection is in reading a request.
IDLE = 0  # between requests: nothing of the next one came yet
HEAD = 1  # the request line or headers under way
BODY = 2  # the head complete, the body under way

_BODY_TICK_S = 1.0  # how often a body's rate is looked at, once its grace is over
_RETRY_AFTER_S = 1

# The app each server's connections run: uvicorn's, with proxy headers believed only from
# the addresses the settings list. One per server, not one per connection.
_APPS: weakref.WeakKeyDictionary[Config, ASGI3Application] = weakref.WeakKeyDictionary()


class Refused(Exception):
    """Raised in a parser callback once the request was answered: stops the parser."""


# The addresses (host, port) of the servers of this process that began their shutdown: no new
# connections, the open ones finish. A long answer (a stream of states) looks and ends, so the
# shutdown is not held until the graceful timeout. By address, as the ASGI scope names it.
_DRAINING: set[tuple[str, int]] = set()


def draining(server: tuple[str, int] | None) -> bool:
    """True once the server at this address (the ASGI scope's ``server``) began its shutdown."""
    return server is not None and tuple(server) in _DRAINING


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, timed heads and bodies, a connection
    limit, a Host check and a safe early answer to ``Expect: 100-continue``."""

    settings: ClassVar[HttpSettings | None] = None  # a test's own; else the process's

    @classmethod
    def configured(cls, settings: HttpSettings) -> type[Self]:
        """This protocol with settings of its own (for a test's server)."""
        return type(cls.__name__, (cls,), {"settings": settings})

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = self.settings or http_settings()
        self.app = _app_behind_trusted_proxies(config, limits.forwarded_allow_ips)
        self._max_head = limits.max_header_bytes
        self._max_url = limits.max_url_bytes
        self._head_timeout = limits.head_timeout_s
        self._min_rate = limits.min_body_rate
        self._grace = limits.body_grace_s
        self._max_connections = limits.max_connections
        self._phase = IDLE
        self._head_room = self._max_head  # head bytes still allowed (0: refuse at next read)
        self._hosts = 0
        self._over_limit = False
        self._last_data = 0.0
        self._guard: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # since when a head is awaited, when timed
        self._body_since: float | None = None  # since when the body's rate is measured
        self._body_bytes = 0
        self._body_active = 0.0  # seconds of the body's time that count for its rate
        self._body_tick = 0.0

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self._max_connections
        super().connection_made(transport)
        if self.server is not None and self.server[1] is not None:
            # A server that accepts is not draining (a new one on the address of an old one).
            _DRAINING.discard((self.server[0], self.server[1]))
        now = self.loop.time()
        self._last_data = now
        self._head_since = now  # a new connection has head_timeout_s for its first head
        if over:
            # Answered once its first bytes come (closing at once would reset the connection
            # before the client read the answer); a silent one goes at the head timeout.
            self._over_limit = True
            self._head_room = 0
        self._guard = self.loop.call_later(self._head_timeout, self._guard_due)

    def shutdown(self) -> None:
        if self.server is not None and self.server[1] is not None:
            _DRAINING.add((self.server[0], self.server[1]))
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The keep-alive timer stays armed; when due it looks at this instead.
        self._last_data = self.loop.time()
        if self._phase != BODY:
            if len(data) > self._head_room:
                self._take_past_the_room(data)
                return
            self._head_room -= len(data)  # a read may hold a body too: reset when it ends
        else:
            self._body_bytes += len(data)
        self._feed(data)
        if self._phase != IDLE:
            self._left_incomplete()

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport.is_closing():
                return  # refused from a callback, and answered
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _take_past_the_room(self, data: bytes) -> None:
        """A read longer than what the head may still take: the head's allowance goes to the
        parser first; if it ends no head, the head is too long and the rest is never read."""
        if self._over_limit:
            self._refuse(
                503,
                "The server has too many open connections. Try again shortly.",
                "too_many_connections",
                error_type="server_error",
                retry_after_s=_RETRY_AFTER_S,
            )
            return
        room, view = self._head_room, memoryview(data)
        self._head_room = 0  # on_message_complete gives it back, if a request ends within
        self._feed(view[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self._head_room == 0 and self._phase != BODY:
            self._refuse_long_head()
            return
        self.data_received(view[room:])  # type: ignore[arg-type]

    def _refuse_long_head(self) -> None:
        if self._phase == HEAD and len(self.url) > self._max_url:
            self._refuse_long_url()
        else:
            self._refuse(
                431,
                f"The request head is longer than {self._max_head} bytes.",
                "request_header_fields_too_large",
            )

    def _refuse_long_url(self) -> None:
        self._refuse(
            414,
            f"The request target is longer than {self._max_url} bytes.",
            "request_uri_too_long",
        )

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = HEAD
        self._hosts = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._admit_head()
        super().on_headers_complete()

    def _admit_head(self) -> None:
        """The head's checks; raises ``Refused`` (answered) when it fails one."""
        if len(self.url) > self._max_url:
            self._refuse_long_url()
            raise Refused
        if self._hosts != 1 and self.parser.get_http_version() == "1.1":
            message = "An HTTP/1.1 request must have exactly one Host header."
            self._refuse(400, message, "invalid_host_header")
            raise Refused
        self._phase = BODY
        self._head_since = None
        self._body_since = None

    def on_message_complete(self) -> None:
        self._phase = IDLE
        self._head_room = self._max_head
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle.waiting_for_100_continue:
            app = _ClosingUnlessContinued(app, cycle)
        super()._start_asgi_task(cycle, app)

    # Answers and timers

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request in flight: its answer arms the timer again
        idle = self.loop.time() - self._last_data
        if idle >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive - idle, self._keep_alive_due
            )

    def _left_incomplete(self) -> None:
        """A read left a head or a body incomplete: time it (the timer armed, if need be)."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # refused, or upgraded to another protocol
        now = self.loop.time()
        if self._phase == HEAD:
            if len(self.url) > self._max_url:
                self._refuse_long_url()
                return
            if self._head_since is None:
                self._head_since = now
            due = self._head_since + self._head_timeout
        elif self._min_rate <= 0:
            return
        else:
            if self._body_since is None:
                self._body_since = self._body_tick = now
                self._body_bytes = 0
                self._body_active = 0.0
            due = self._body_tick + max(_BODY_TICK_S, self._grace - self._body_active)
        guard = self._guard
        if guard is None or guard.when() > due:
            if guard is not None:
                guard.cancel()
            self._guard = self.loop.call_at(due, self._guard_due)

    def _guard_due(self) -> None:
        self._guard = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        now = self.loop.time()
        if self._phase == BODY:
            if self._body_since is not None and self._min_rate > 0:
                self._judge_body(now)
        elif self._head_since is not None:
            self._judge_head(now)
        # Else nothing is awaited of the client: the keep-alive timer's business.

    def _judge_head(self, now: float) -> None:
        if self.flow.read_paused:
            # Pipelined requests wait for the app: the server is not reading, not the client
            # slow to send.
            self._head_since = now
        due = (self._head_since or now) + self._head_timeout
        if now < due:
            self._guard = self.loop.call_at(due, self._guard_due)
        elif self._phase == HEAD:
            message = f"The request head did not arrive within {self._head_timeout:g} s."
            self._refuse(408, message, "request_timeout")
        else:
            self.transport.close()  # a connection that sent nothing

    def _judge_body(self, now: float) -> None:
        cycle = self.cycle
        waiting = self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue)
        if not waiting:
            self._body_active += now - self._body_tick
        self._body_tick = now
        active = self._body_active
        if active >= self._grace and self._body_bytes < self._min_rate * active:
            message = f"The request body came slower than {self._min_rate} bytes/s."
            self._refuse(408, message, "request_timeout")
            return
        due = now + max(_BODY_TICK_S, self._grace - active)
        self._guard = self.loop.call_at(due, self._guard_due)

    def _refuse(
        self,
        status: int,
        message: str,
        code: str,
        *,
        error_type: str = "invalid_request_error",
        retry_after_s: int | None = None,
    ) -> None:
        """Answer status with OpenAI's error body and close. A request whose answer already
        began is cut instead: another answer in its middle would corrupt it, and one after an
        early answer (its body still coming) would read as the answer to a next request."""
        if self.transport.is_closing():
            return
        cycle = self.cycle  # in a body, this request's; in a head, the one before
        if (
            cycle is None
            or not cycle.response_started
            or (cycle.response_complete and self._phase != BODY)
        ):
            self.logger.warning("Refused with %d: %s", status, message)
            answer = refusal(
                status,
                message,
                code,
                self.server_state.default_headers,
                error_type=error_type,
                retry_after_s=retry_after_s,
            )
            self.transport.write(answer)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says so; what it sends is dropped
            cycle.message_event.set()
        self.transport.close()


class _ClosingUnlessContinued:
    """The app of a request that asked for ``100 Continue``: an answer that goes out before
    the 100 did, while the body is still to come, closes the connection after it. The client
    may send the body anyway, or its next request; the two cannot be told apart."""

    __slots__ = ("app", "cycle")

    def __init__(self, app: ASGI3Application, cycle: RequestResponseCycle) -> None:
        self.app = app
        self.cycle = cycle

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        cycle = self.cycle

        async def sending(message: Any) -> None:
            if (
                message["type"] == "http.response.start"
                and cycle.waiting_for_100_continue
                and cycle.more_body
            ):
                cycle.keep_alive = False
            await send(message)

        await self.app(scope, receive, sending)


def _app_behind_trusted_proxies(config: Config, trusted: str) -> ASGI3Application:
    """The server's app, proxy headers believed only from ``trusted`` (none when empty)."""
    app = _APPS.get(config)
    if app is None:
        inner = config.loaded_app
        if isinstance(inner, ProxyHeadersMiddleware):
            inner = inner.app
        app = ProxyHeadersMiddleware(inner, trusted_hosts=trusted) if trusted.strip() else inner
        _APPS[config] = app
    return app
