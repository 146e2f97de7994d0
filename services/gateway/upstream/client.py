"""One HTTP/1.1 connection to a model's server: the request written in one piece, the answer
parsed by httptools (llhttp, in C) straight from the socket's callbacks.

aiohttp's client cost 0.085 ms of CPU per request against the benchmark's upstream, more
than a third of the gateway's whole cost, where this costs about 0.011 ms: no task per
request, no stream reader, no multidict, no tracing hooks. It does what the gateway needs
and no more: a ``POST`` with a body in memory, answers delimited by ``content-length``,
chunked encoding or the connection's end, keep-alive, and a streamed answer read with
back-pressure (reading from the socket pauses while more than ``HIGH_WATER`` bytes wait).

A failure is one of the ``UpstreamConnectionError`` classes or ``TimeoutError``; the proxy
maps them to 502 and 504.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httptools

# A streamed answer stops being read from the socket while this much waits for the client.
HIGH_WATER = 256 * 1024


class UpstreamConnectionError(Exception):
    """The model's server could not be reached, or broke the connection."""


class UpstreamConnectFailed(UpstreamConnectionError):
    """Connecting failed (refused, unreachable, TLS)."""


class UpstreamDisconnected(UpstreamConnectionError):
    """The server closed the connection before its answer began (a pooled connection its
    keep-alive ended as it was reused, or a crash)."""


class UpstreamBroken(UpstreamConnectionError):
    """The answer broke off, or was not HTTP."""


class UpstreamConnection(asyncio.Protocol):
    """A connection and the one answer in flight on it; reused while both sides keep it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False  # taken from the pool's idle connections at least once
        self.server: tuple[str, str, int] = ("", "", 0)  # the pool's key: scheme, host, port
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.until_close = False  # delimited by the connection's end
        self.error: UpstreamConnectionError | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.streaming = False  # read as it comes: held to HIGH_WATER (a whole body is not)
        self.in_flight = False
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_flight or self.complete:  # bytes no request asked for: never reuse it
            self._abort(UpstreamBroken("data with no request in flight"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(UpstreamBroken(f"not an HTTP answer ({type(exc).__name__})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.in_flight and not self.complete and self.error is None:
            if self.headers_done and self.until_close:
                self.complete = True  # the end of the connection is the end of this answer
            elif self.headers_done:
                self.error = UpstreamBroken("the answer broke off")
            else:
                self.error = UpstreamDisconnected("closed before answering")
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:  # a second answer in the same read: this connection is not reused
            self.keep_alive = False
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:
            return  # an interim answer: its message completes, the real one follows
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        self.until_close = (
            "content-length" not in self.headers and "transfer-encoding" not in self.headers
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.streaming and self.buffered > HIGH_WATER and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        if not self.headers_done:  # the end of an interim answer
            self.headers = {}
            return
        self.complete = True
        self._wake()

    # the proxy's side

    def send(self, request: bytes) -> None:
        """Write a request; its answer is then awaited with ``answer``."""
        self._reset()
        self.in_flight = True
        assert self.transport is not None
        self.transport.write(request)

    async def answer(self, timeout_s: float | None) -> None:
        """Wait for the status line and headers."""
        while not self.headers_done:
            await self._wait(timeout_s)

    async def read(self, timeout_s: float | None) -> bytes:
        """The whole body (decoded, as aiohttp did, when the server compressed it anyway)."""
        while not self.complete:
            await self._wait(timeout_s)
        body = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        return _decoded(body, self.headers.get("content-encoding", ""))

    async def iter_chunks(self, timeout_s: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives, each read at most ``timeout_s`` after the one before."""
        self.streaming = True
        while True:
            if self.chunks:
                piece = b"".join(self.chunks)
                self.chunks, self.buffered = [], 0
                if self.paused and self.transport is not None and not self.closed:
                    self.paused = False
                    self.transport.resume_reading()
                yield piece
            elif self.complete:
                return
            else:
                await self._wait(timeout_s)

    @property
    def reusable(self) -> bool:
        """Its answer was read to the end and both sides keep the connection."""
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def finish(self) -> None:
        """The answer is done with: ready for the next request (``reusable``) or closed."""
        self.in_flight = False
        if not self.reusable:
            self.close()
        elif self.paused and self.transport is not None:
            self.paused = False  # a stream released at its end while reading was held
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # internals

    async def _wait(self, timeout_s: float | None) -> None:
        if self.error is not None:
            raise self.error
        if self.closed and not self.complete:
            raise UpstreamDisconnected("connection closed")
        waiter = self._waiter = self.loop.create_future()
        timer = None if timeout_s is None else self.loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self, error: UpstreamConnectionError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, wbits=-zlib.MAX_WBITS)  # raw deflate, as some send
    except zlib.error as exc:
        raise UpstreamBroken(f"a {encoding} body that does not decode") from exc
    return body  # an encoding we did not ask for and cannot decode: passed on as it came
