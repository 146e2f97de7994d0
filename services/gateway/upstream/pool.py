"""The gateway's connections to the models' servers: a pool of ``UpstreamConnection`` per
server, bounded in all, a few kept idle per server, each idle one dropped after its expiry.

``UpstreamPool.post`` sends one request and returns once the answer's headers are in; the
``UpstreamResponse`` then gives the body whole or as it streams, and gives the connection
back (or closes it) when done with. A connect that fails, or a pooled connection found closed
under us before any answer, raises ``NotSent``: the request never reached a server that could
answer it, so the proxy may send it again (to another endpoint of the model's fleet). A new
connection closed before its answer is not: the server may have acted on the request.

At the limit, a request takes a connection given back to its server's idle ones, or closes
an idle connection to another server to open its own, before it waits for one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from time import monotonic
from typing import Protocol
from urllib.parse import urlsplit

from services.gateway.upstream.client import (
    UpstreamConnectFailed,
    UpstreamConnection,
    UpstreamDisconnected,
)

_UNSAFE_IN_HEADERS = ("\r", "\n", "\x00")


@dataclass(frozen=True)
class Timeouts:
    """``pool_s`` bounds the wait for a free connection and the connect together,
    ``connect_s`` one connect (TLS included), ``read_s`` each read (between chunks too)."""

    pool_s: float
    connect_s: float
    read_s: float


@dataclass(frozen=True)
class Target:
    """One endpoint of one server, its request head built once (the request line, host,
    and the route's fixed headers); ``headers`` must not hold a line break."""

    scheme: str
    host: str  # where to connect
    port: int
    head: bytes
    name: str  # the server's name: its TLS name and Host (the host, unless an address of it)

    @classmethod
    def of(cls, url: str, headers: dict[str, str], server_name: str | None = None) -> Target:
        """``server_name``: the name an address in ``url`` was resolved from (a DNS fleet)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme, port) in (("http", 80), ("https", 443))
        name = server_name or parts.hostname
        host = name if ":" not in name else f"[{name}]"
        lines = [
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"host: {host if default else f'{host}:{port}'}",
            "user-agent: tollgate-gateway",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        if any(c in line for line in lines for c in _UNSAFE_IN_HEADERS):
            raise ValueError("an upstream header or URL holds a line break")
        head = ("\r\n".join(lines) + "\r\n").encode()
        return cls(parts.scheme, parts.hostname, port, head, name)

    @property
    def server(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class NotSent(Exception):
    """The request never reached a server that could answer it: it may be sent again."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Ending(Protocol):
    """Told once when the answer is done with (a fleet's endpoint counting its requests)."""

    def end(self) -> None: ...


class UpstreamResponse:
    """An answer whose headers are in; its body is read whole (``read``) or as it comes
    (``iter_chunks``), then ``release`` or ``close`` hands the connection back or closes it."""

    def __init__(
        self,
        pool: UpstreamPool,
        connection: UpstreamConnection,
        read_s: float,
        ending: Ending | None = None,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._read_s = read_s
        self._ending = ending
        self._done = False
        self.status = connection.status
        self.headers = connection.headers

    async def read(self) -> bytes:
        return await self._connection.read(self._read_s)

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._connection.iter_chunks(self._read_s)

    def at_eof(self) -> bool:
        return self._connection.complete

    def release(self) -> None:
        """Back to the pool when read to its end and kept alive; else closed."""
        if not self._done:
            self._done = True
            self._pool.give_back(self._connection)
            if self._ending is not None:
                self._ending.end()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._connection.close()
            self._pool.give_back(self._connection)
            if self._ending is not None:
                self._ending.end()


class UpstreamPool:
    """At most ``max_connections`` open in all (a request waits for one, within its pool
    timeout), at most ``keep_idle`` idle per server, none idle past ``expiry_s``."""

    def __init__(
        self,
        *,
        max_connections: int,
        keep_idle: int,
        expiry_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keep_idle = keep_idle
        self.expiry_s = expiry_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[UpstreamConnection]] = {}
        self._open = 0  # connections open or being opened
        self._slots: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(
        self,
        target: Target,
        body: bytes,
        headers: bytes,
        timeouts: Timeouts,
        ending: Ending | None = None,
    ) -> UpstreamResponse:
        """Send ``target``'s head, ``headers`` (whole ``name: value\r\n`` lines) and
        ``body``; return once the answer's status and headers are in. ``NotSent`` when no
        server could have acted on it; ``ending`` is told when the answer is done with."""
        request = b"%scontent-length: %d\r\n%s\r\n%s" % (target.head, len(body), headers, body)
        try:
            connection = await self._connection(target, timeouts)
        except UpstreamConnectFailed as exc:
            raise NotSent(exc) from exc  # nothing was sent
        try:
            connection.send(request)
            await connection.answer(timeouts.read_s)
        except UpstreamDisconnected as exc:
            connection.close()
            self.give_back(connection)
            if connection.reused:  # its keep-alive ended as we reused it: never answered
                raise NotSent(exc) from exc
            raise
        except BaseException:
            connection.close()
            self.give_back(connection)
            raise
        return UpstreamResponse(self, connection, timeouts.read_s, ending)

    async def _connection(self, target: Target, timeouts: Timeouts) -> UpstreamConnection:
        connection = self._idle_connection(target.server)
        if connection is not None:
            return connection
        async with asyncio.timeout(timeouts.pool_s):
            while self._open >= self.max_connections:
                if self._drop_an_idle_connection():
                    break  # its place is ours
                slot = asyncio.get_running_loop().create_future()
                self._slots.append(slot)
                try:
                    await slot
                except BaseException:
                    if slot.done() and not slot.cancelled():
                        self._free_slot()  # it was handed to us as we left: pass it on
                    raise
                connection = self._idle_connection(target.server)
                if connection is not None:  # one was given back to the pool
                    return connection
            self._open += 1
            try:
                return await self._connect(target, timeouts.connect_s)
            except BaseException:
                self._forget()
                raise

    def _idle_connection(self, server: tuple[str, str, int]) -> UpstreamConnection | None:
        """The most recently used idle connection to the server (the likeliest still open)."""
        idle = self._idle.get(server)
        while idle:
            connection = idle.pop()
            if not connection.closed and monotonic() - connection.idle_since < self.expiry_s:
                connection.reused = True
                return connection
            connection.close()
            self._forget()
        return None

    def _drop_an_idle_connection(self) -> bool:
        """At the limit, an idle connection (to any server: the oldest of the first found)
        is closed to make room; True when one was."""
        for idle in self._idle.values():
            if idle:
                idle.popleft().close()
                self._open -= 1
                return True
        return False

    async def _connect(self, target: Target, timeout_s: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        context = None
        if target.scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.name if context else None,
                )
        except OSError as exc:  # refused, unreachable, a name not found, TLS (SSLError)
            raise UpstreamConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        connection.server = target.server
        return connection

    def give_back(self, connection: UpstreamConnection) -> None:
        """Called once per request when its answer is done with."""
        if not connection.in_flight:
            return  # already given back
        connection.finish()
        if connection.closed:
            self._forget()
            return
        idle = self._idle.setdefault(connection.server, deque())
        if self._closed or len(idle) >= self.keep_idle:
            connection.close()
            self._forget()
            return
        connection.idle_since = monotonic()
        idle.append(connection)
        self._free_slot()  # a request waiting for a connection to this server may take it
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.expiry_s, self._expire)

    def _forget(self) -> None:
        self._open -= 1
        self._free_slot()

    def _free_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _expire(self) -> None:
        self._sweep = None
        now = monotonic()
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self.expiry_s):
                idle.popleft().close()
                self._forget()
        if any(self._idle.values()):
            self._sweep = asyncio.get_running_loop().call_later(self.expiry_s / 2, self._expire)

    async def close(self) -> None:
        """Closes every idle connection; those in use close as their answers end."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            while idle:
                idle.popleft().close()
                self._forget()
