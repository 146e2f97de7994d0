"""The gateway's own HTTP/1.1 client for the models' servers, against real local sockets.

Each test runs a tiny server (``asyncio.start_server`` on 127.0.0.1, port 0) whose handler
writes the answer's bytes by hand, so that each test controls exactly what the client sees:
the ways an answer is delimited, keep-alive and expiry, a server that closes, breaks off,
stalls or floods, and the pool's bound on its connections under timeouts and cancellation.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from deploy.ports import free_port
from services.gateway.upstream.client import (
    HIGH_WATER,
    UpstreamBroken,
    UpstreamConnectFailed,
    UpstreamConnection,
    UpstreamDisconnected,
)
from services.gateway.upstream.pool import (
    NotSent,
    Target,
    Timeouts,
    UpstreamPool,
    UpstreamResponse,
)

TIMEOUTS = Timeouts(pool_s=2.0, connect_s=2.0, read_s=2.0)
# What one read of a socket hands the protocol at most (asyncio's selector transports).
READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    head: bytes
    body: bytes

    @property
    def lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")[:-2]  # the head ends with a blank line


class Peer:
    """The server's side of one accepted connection."""

    def __init__(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.got_request = asyncio.Event()
        self.ended = asyncio.Event()  # the client closed its side

    async def request(self) -> Request | None:
        """The next request, or None once the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.set()
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        request = Request(head, body)
        self.requests.append(request)
        self.got_request.set()
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Never answer: read on until the client closes the connection."""
        while await self.request() is not None:
            pass

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[Peer], Awaitable[None]]


class Upstream:
    """A model's server that runs ``handler`` on each connection it accepts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: list[Peer] = []
        self.accepted = asyncio.Event()
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        self.accepted.set()
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test's end stopped the handler
        except Exception as exc:  # the test fails on it at teardown
            self.errors.append(exc)
        finally:
            writer.close()
            self._tasks.discard(task)

    @property
    def requests(self) -> list[Request]:
        return [request for peer in self.peers for request in peer.requests]

    def target(self, path: str = "/v1/chat/completions", **headers: str) -> Target:
        return Target.of(f"http://127.0.0.1:{self.port}{path}", headers)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


Serve = Callable[[Handler], Awaitable[Upstream]]
MakePool = Callable[..., UpstreamPool]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[Upstream] = []

    async def start(handler: Handler) -> Upstream:
        upstream = await Upstream(handler).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.stop()
    for upstream in started:
        assert not upstream.errors, f"the test server's handler failed: {upstream.errors!r}"


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[UpstreamPool] = []

    def make(
        max_connections: int = 10, keep_idle: int = 10, expiry_s: float = 30.0
    ) -> UpstreamPool:
        pool = UpstreamPool(max_connections=max_connections, keep_idle=keep_idle, expiry_s=expiry_s)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def answer(body: bytes = b'{"ok":true}', *extra: bytes, status: bytes = b"200 OK") -> bytes:
    """A whole answer delimited by its content-length; ``extra`` header lines go first."""
    head = [b"HTTP/1.1 " + status, *extra, b"content-length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def answering(response: bytes) -> Handler:
    """A handler that gives every request on its connection the same answer."""

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(response)

    return handle


async def wait_until(probe: Callable[[], bool], what: str, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.01)


async def read_all(response: UpstreamResponse) -> bytes:
    body = await response.read()
    response.release()
    return body


# 1. an answer delimited by its content-length, and the request as it went out


async def test_a_content_length_answer_and_the_request_on_the_wire(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(
        answering(
            answer(
                b'{"id":"cmpl-1"}',
                b"Content-Type: application/json",
                b"X-Served-By: one",
                b"x-served-by: two",
                status=b"201 Created",
            )
        )
    )
    pool = make_pool()
    body = b'{"model":"m","messages":[]}\r\n\x00\xff\xfe binary \r\n\r\n tail'
    target = upstream.target("/v1/chat/completions", authorization="Bearer sk-up", **{"x-org": "o"})

    response = await pool.post(target, body, b"x-request-id: req-42\r\n", TIMEOUTS)

    assert response.status == 201
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-served-by"] == "one, two"  # repeated headers joined, as aiohttp
    assert all(name == name.lower() for name in response.headers)
    assert await response.read() == b'{"id":"cmpl-1"}'
    assert response.at_eof()
    response.release()

    [received] = upstream.requests
    assert received.lines == [
        b"POST /v1/chat/completions HTTP/1.1",
        b"host: 127.0.0.1:%d" % upstream.port,
        b"user-agent: tollgate-gateway",
        b"authorization: Bearer sk-up",
        b"x-org: o",
        b"content-length: %d" % len(body),
        b"x-request-id: req-42",
    ]
    assert received.body == body


# 2. chunked answers, whole and streamed


async def test_a_chunked_answer_read_whole(serve: Serve, make_pool: MakePool) -> None:
    pieces = [b'data: {"a":1}\n\n', b"data: ", b'{"b":2}\n\n', b"data: [DONE]\n\n"]
    upstream = await serve(
        answering(CHUNKED_HEAD + b"".join(chunk(piece) for piece in pieces) + LAST_CHUNK)
    )
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)

    assert response.status == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert await response.read() == b"".join(pieces)
    assert response.at_eof()
    response.release()
    assert pool._open == 1  # read to its end: kept


async def test_a_chunked_answer_streams_as_the_server_flushes_it(
    serve: Serve, make_pool: MakePool
) -> None:
    go_on = asyncio.Event()
    finished = asyncio.Event()

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"data: one\n\n"))
        await go_on.wait()
        await peer.send(chunk(b"data: two\n\n"))
        await go_on.wait()
        await peer.send(LAST_CHUNK)
        finished.set()
        await peer.until_closed()

    upstream = await serve(handle)
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    chunks = response.iter_chunks()

    assert await asyncio.wait_for(anext(chunks), 2) == b"data: one\n\n"
    assert not response.at_eof()
    assert not finished.is_set()
    go_on.set()
    assert await asyncio.wait_for(anext(chunks), 2) == b"data: two\n\n"
    rest = [piece async for piece in chunks]
    assert rest == []
    assert finished.is_set()
    assert response.at_eof()
    response.release()
    assert pool._open == 1


# 3. an answer delimited by the connection's end


async def test_an_answer_delimited_by_the_connections_end(
    serve: Serve, make_pool: MakePool
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of this, ")
        await peer.send(b"until the end")
        peer.close()

    upstream = await serve(handle)
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)

    assert response.status == 200
    assert await response.read() == b"all of this, until the end"
    assert response.at_eof()
    response.release()
    assert pool._open == 0  # the connection ended with the answer: nothing kept


# 4. keep-alive, a `connection: close` answer, keep_idle=0, expiry


async def test_sequential_posts_reuse_one_connection(serve: Serve, make_pool: MakePool) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool()

    for _ in range(3):
        response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
        assert await read_all(response) == b"ok"

    assert len(upstream.peers) == 1
    assert len(upstream.peers[0].requests) == 3
    assert pool._open == 1


async def test_an_answer_with_connection_close_is_not_reused(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok", b"Connection: close")))
    pool = make_pool()

    for _ in range(2):
        response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
        assert await read_all(response) == b"ok"
        assert pool._open == 0

    assert len(upstream.peers) == 2
    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)  # the client closed it


async def test_keep_idle_zero_keeps_no_connection(serve: Serve, make_pool: MakePool) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(keep_idle=0)

    for _ in range(2):
        response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
        assert await read_all(response) == b"ok"
        assert pool._open == 0

    assert len(upstream.peers) == 2
    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)


async def test_an_idle_connection_is_closed_after_its_expiry(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(expiry_s=0.3)

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert await read_all(response) == b"ok"
    released = time.monotonic()
    assert pool._open == 1

    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)  # the server sees its EOF
    waited = time.monotonic() - released
    assert 0.25 <= waited < 1.5, waited
    assert pool._open == 0

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert await read_all(response) == b"ok"
    assert len(upstream.peers) == 2


# 5. a pooled connection that the server closed


async def test_a_pooled_connection_closed_by_the_server_is_not_sent(
    serve: Serve, make_pool: MakePool
) -> None:
    """Its keep-alive ended as it was reused: ``NotSent``, so the proxy may send it again
    (tests/gateway/test_fleet_proxy.py), and the next post opens a new connection."""

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        if peer.index == 0:  # its keep-alive ends as the client reuses it: no answer
            await peer.request()
            peer.close()
            return
        await answering(answer(b"again"))(peer)

    upstream = await serve(handle)
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert await read_all(response) == b"first"

    with pytest.raises(NotSent) as raised:
        await pool.post(upstream.target(), b'{"n":2}', b"", TIMEOUTS)
    assert isinstance(raised.value.error, UpstreamDisconnected)
    assert pool._open == 0

    response = await pool.post(upstream.target(), b'{"n":2}', b"", TIMEOUTS)
    assert response.status == 200
    assert await read_all(response) == b"first"  # a new connection's first answer
    assert len(upstream.peers) == 2
    assert [request.body for request in upstream.requests] == [b"{}", b'{"n":2}', b'{"n":2}']
    assert pool._open == 1


async def test_a_pooled_connection_seen_closed_is_dropped_without_a_try(
    serve: Serve, make_pool: MakePool
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok"))
        if peer.index == 0:
            peer.close()  # keep-alive timed out on the server's side, while idle
            return
        await answering(answer(b"ok"))(peer)

    upstream = await serve(handle)
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert await read_all(response) == b"ok"
    connection = response._connection
    await wait_until(lambda: connection.closed, "the client seeing the server's close")

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert await read_all(response) == b"ok"
    assert len(upstream.peers) == 2
    assert len(upstream.requests) == 2  # nothing was sent on the closed one
    assert pool._open == 1


async def test_a_new_connection_closed_before_answering_is_not_sent_again(
    serve: Serve, make_pool: MakePool
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        peer.close()  # a crash with the request read: it may have been acted on

    upstream = await serve(handle)
    pool = make_pool()

    with pytest.raises(UpstreamDisconnected):
        await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert len(upstream.requests) == 1
    assert pool._open == 0


# 6. nothing listening


async def test_a_refused_connect_is_not_sent(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool()
    attempts: list[Target] = []
    connect = pool._connect

    async def counted(target: Target, timeout_s: float) -> UpstreamConnection:
        attempts.append(target)
        return await connect(target, timeout_s)

    monkeypatch.setattr(pool, "_connect", counted)
    target = Target.of(f"http://127.0.0.1:{free_port()}/v1/embeddings", {})

    with pytest.raises(NotSent, match="ConnectionRefusedError") as raised:
        await pool.post(target, b"{}", b"", TIMEOUTS)

    assert isinstance(raised.value.error, UpstreamConnectFailed)
    assert len(attempts) == 1  # another endpoint, or this one again, is the proxy's choice
    assert pool._open == 0


# 7. a server that never answers


async def test_a_server_that_never_answers_times_out_and_frees_its_slot(
    serve: Serve, make_pool: MakePool
) -> None:
    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.until_closed()
        else:
            await answering(answer(b"ok"))(peer)

    upstream = await serve(handle)
    pool = make_pool(max_connections=1)
    timeouts = Timeouts(pool_s=1.0, connect_s=1.0, read_s=0.3)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await pool.post(upstream.target(), b"{}", b"", timeouts)
    waited = time.monotonic() - started

    assert 0.25 <= waited < 1.0, waited
    assert pool._open == 0
    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)  # closed, not left open
    response = await pool.post(upstream.target(), b"{}", b"", timeouts)
    assert await read_all(response) == b"ok"


# 8. the bound on open connections


async def test_a_second_post_waits_for_the_only_connection(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(max_connections=1, keep_idle=0)

    first = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    second = asyncio.create_task(pool.post(upstream.target(), b"{}", b"", TIMEOUTS))
    await asyncio.sleep(0.1)
    assert not second.done()
    assert len(upstream.peers) == 1

    assert await read_all(first) == b"ok"
    response = await asyncio.wait_for(second, 2)
    assert await read_all(response) == b"ok"
    assert pool._open == 0


async def test_a_waiting_post_gets_the_connection_given_back_to_the_pool(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(max_connections=1, keep_idle=1)
    timeouts = Timeouts(pool_s=0.5, connect_s=1.0, read_s=1.0)

    first = await pool.post(upstream.target(), b"{}", b"", timeouts)
    second = asyncio.create_task(pool.post(upstream.target(), b"{}", b"", timeouts))
    await asyncio.sleep(0.1)
    assert not second.done()

    assert await read_all(first) == b"ok"  # kept alive: back to the idle connections
    response = await second
    assert await read_all(response) == b"ok"


async def test_idle_connections_to_one_server_do_not_block_another(
    serve: Serve, make_pool: MakePool
) -> None:
    one = await serve(answering(answer(b"one")))
    other = await serve(answering(answer(b"other")))
    pool = make_pool(max_connections=1, keep_idle=1)
    timeouts = Timeouts(pool_s=0.3, connect_s=1.0, read_s=1.0)

    response = await pool.post(one.target(), b"{}", b"", timeouts)
    assert await read_all(response) == b"one"  # idle now, nothing in use

    response = await pool.post(other.target(), b"{}", b"", timeouts)
    assert await read_all(response) == b"other"


async def test_the_wait_for_a_connection_is_bounded_by_pool_s(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(max_connections=1)
    timeouts = Timeouts(pool_s=0.2, connect_s=1.0, read_s=1.0)

    first = await pool.post(upstream.target(), b"{}", b"", timeouts)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await pool.post(upstream.target(), b"{}", b"", timeouts)
    waited = time.monotonic() - started

    assert 0.15 <= waited < 1.0, waited
    assert len(upstream.peers) == 1  # it never connected
    assert pool._open == 1  # the first still holds the one connection; no count leaked
    assert await read_all(first) == b"ok"
    assert pool._open == 1


# 9. cancellation


async def test_cancelling_a_post_waiting_for_its_answer_frees_its_slot(
    serve: Serve, make_pool: MakePool
) -> None:
    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.until_closed()
        else:
            await answering(answer(b"ok"))(peer)

    upstream = await serve(handle)
    pool = make_pool(max_connections=1)

    waiting = asyncio.create_task(pool.post(upstream.target(), b"{}", b"", TIMEOUTS))
    await asyncio.wait_for(upstream.accepted.wait(), 2)
    await asyncio.wait_for(upstream.peers[0].got_request.wait(), 2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert pool._open == 0
    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)  # closed: the server stops
    timeouts = Timeouts(pool_s=0.5, connect_s=1.0, read_s=1.0)
    response = await pool.post(upstream.target(), b"{}", b"", timeouts)
    assert await read_all(response) == b"ok"


async def test_cancelling_a_post_waiting_for_a_slot_leaves_the_slot_to_others(
    serve: Serve, make_pool: MakePool
) -> None:
    upstream = await serve(answering(answer(b"ok")))
    pool = make_pool(max_connections=1, keep_idle=0)

    first = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    cancelled = asyncio.create_task(pool.post(upstream.target(), b"{}", b"", TIMEOUTS))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    third = asyncio.create_task(pool.post(upstream.target(), b"{}", b"", TIMEOUTS))
    await asyncio.sleep(0.05)
    assert not third.done()

    assert await read_all(first) == b"ok"
    response = await asyncio.wait_for(third, 2)
    assert await read_all(response) == b"ok"
    assert pool._open == 0


# 10. broken answers


async def test_an_answer_broken_mid_body(serve: Serve, make_pool: MakePool) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        peer.close()

    upstream = await serve(handle)
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    assert response.status == 200
    with pytest.raises(UpstreamBroken):
        await response.read()
    assert not response.at_eof()
    response.close()
    assert pool._open == 0

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)
    chunks = response.iter_chunks()
    assert await anext(chunks) == b"0123456789"
    with pytest.raises(UpstreamBroken):
        await anext(chunks)
    response.close()
    assert pool._open == 0


async def test_an_answer_that_is_not_http(serve: Serve, make_pool: MakePool) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"SSH-2.0-OpenSSH_9.6\r\nthis is no HTTP answer\r\n\r\n")
        await peer.until_closed()

    upstream = await serve(handle)
    pool = make_pool()

    with pytest.raises(UpstreamBroken):
        await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)

    assert len(upstream.peers) == 1  # a broken answer is not retried
    assert pool._open == 0
    await asyncio.wait_for(upstream.peers[0].ended.wait(), 2)


# 11. back-pressure on a streamed answer


async def test_a_streamed_answer_is_read_with_back_pressure(
    serve: Serve, make_pool: MakePool
) -> None:
    piece_size, count = 64 * 1024, 128  # 8 MiB
    pieces = [bytes([i % 251]) * piece_size for i in range(count)]
    total = piece_size * count
    drained = 0
    finished = asyncio.Event()

    async def handle(peer: Peer) -> None:
        nonlocal drained
        await peer.request()
        # A fixed send buffer (no autotuning up to 4 MiB): what the kernel holds stays well
        # under the 8 MiB, so the writer must wait for the client.
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        await peer.send(CHUNKED_HEAD)
        for piece in pieces:
            await peer.send(chunk(piece))  # as fast as the client takes them
            drained += len(piece)
        await peer.send(LAST_CHUNK)
        finished.set()
        await peer.until_closed()

    upstream = await serve(handle)
    pool = make_pool()
    timeouts = Timeouts(pool_s=2.0, connect_s=2.0, read_s=5.0)

    response = await pool.post(upstream.target(), b"{}", b"", timeouts)
    connection = response._connection
    chunks = response.iter_chunks()
    received = [await anext(chunks)]
    await asyncio.sleep(0.3)  # a slow client: the server goes on writing meanwhile

    assert connection.paused
    assert connection.buffered <= HIGH_WATER + READ_SIZE
    assert connection.buffered < 1024 * 1024
    assert not finished.is_set(), "the server wrote the whole 8 MiB: nothing held it back"
    assert drained < total

    largest = len(received[0])
    async for piece in chunks:
        received.append(piece)
        largest = max(largest, len(piece))
    body = b"".join(received)

    assert len(body) == total
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(pieces)).digest()
    assert largest <= HIGH_WATER + READ_SIZE
    assert finished.is_set()
    assert response.at_eof()
    response.release()
    assert pool._open == 1


async def test_a_stream_released_while_reading_was_paused_can_be_reused(
    serve: Serve, make_pool: MakePool
) -> None:
    near_high_water = HIGH_WATER - 6 * 1024
    go_on, go_last = asyncio.Event(), asyncio.Event()

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"first"))
        await go_on.wait()
        await peer.send(chunk(b"x" * near_high_water))
        await go_last.wait()
        await peer.send(chunk(b"y" * 8 * 1024) + LAST_CHUNK)  # over HIGH_WATER, and the end
        await answering(answer(b"second"))(peer)

    upstream = await serve(handle)
    pool = make_pool()
    timeouts = Timeouts(pool_s=1.0, connect_s=1.0, read_s=0.5)

    response = await pool.post(upstream.target(), b"{}", b"", timeouts)
    connection = response._connection
    chunks = response.iter_chunks()
    assert await anext(chunks) == b"first"
    go_on.set()
    await wait_until(lambda: connection.buffered >= near_high_water, "the body near HIGH_WATER")
    assert (connection.complete, connection.paused) == (False, False)
    go_last.set()
    await wait_until(lambda: connection.complete, "the stream's end")
    # the end came in the read that went over HIGH_WATER: reading is paused
    assert (connection.complete, connection.paused, response.at_eof()) == (True, True, True)
    response.release()  # as relay.close_upstream does when the client is gone at the end
    assert pool._open == 1

    response = await pool.post(upstream.target(), b"{}", b"", timeouts)
    assert await read_all(response) == b"second"
    assert len(upstream.peers) == 1


# 12. a compressed answer


async def test_a_gzip_answer_is_decoded_by_read(serve: Serve, make_pool: MakePool) -> None:
    plain = b'{"choices":[{"text":"' + b"compressible " * 200 + b'"}]}'
    compressed = gzip.compress(plain)
    assert len(compressed) < len(plain)
    upstream = await serve(answering(answer(compressed, b"Content-Encoding: gzip")))
    pool = make_pool()

    response = await pool.post(upstream.target(), b"{}", b"", TIMEOUTS)

    assert response.headers["content-encoding"] == "gzip"
    assert await read_all(response) == plain


# 13. targets


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nx-injected: 1", "a\rb", "a\x00b"])
@pytest.mark.unit
def test_a_header_value_with_a_line_break_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        Target.of("http://models.internal:8000/v1/chat/completions", {"authorization": value})


@pytest.mark.unit
def test_a_header_name_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        Target.of("http://models.internal/v1", {"x-a: 1\r\nx-b": "2"})


@pytest.mark.parametrize(
    "url",
    ["ftp://models.internal/v1", "file:///etc/passwd", "models.internal:8000/v1", "http:///v1"],
)
@pytest.mark.unit
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Target.of(url, {})


@pytest.mark.unit
def test_a_query_string_is_kept() -> None:
    target = Target.of("http://models.internal:8000/openai/deployments/d?api-version=2024-06", {})
    assert target.head.startswith(b"POST /openai/deployments/d?api-version=2024-06 HTTP/1.1\r\n")


@pytest.mark.unit
def test_a_url_without_a_path_posts_to_the_root() -> None:
    assert Target.of("http://models.internal", {}).head.startswith(b"POST / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("url", "host_line", "port"),
    [
        ("http://models.internal/v1", b"host: models.internal", 80),
        ("http://models.internal:80/v1", b"host: models.internal", 80),
        ("https://models.internal/v1", b"host: models.internal", 443),
        ("https://models.internal:443/v1", b"host: models.internal", 443),
        ("http://models.internal:8000/v1", b"host: models.internal:8000", 8000),
        ("https://models.internal:8443/v1", b"host: models.internal:8443", 8443),
        ("http://models.internal:443/v1", b"host: models.internal:443", 443),
        ("http://[::1]:8000/v1", b"host: [::1]:8000", 8000),
    ],
)
@pytest.mark.unit
def test_the_host_header_has_the_port_only_when_not_the_default(
    url: str, host_line: bytes, port: int
) -> None:
    target = Target.of(url, {})
    assert target.head.split(b"\r\n")[1] == host_line
    assert target.port == port
    assert target.head.endswith(b"\r\n")
    assert not target.head.endswith(b"\r\n\r\n")  # the pool adds content-length and the end
