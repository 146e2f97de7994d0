"""The gateway's HTTP/1.1 protocol (uvicorn's, with a lean exchange for the proxied calls) on
real sockets: the same bytes as stock uvicorn, keep-alive, pipelining, request bodies in every
framing, 100-continue, streams with back-pressure, a client leaving, the keep-alive timeout,
errors and a graceful stop."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import re
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.transport.http_protocol import GatewayProtocol, LeanExchange
from tests.served import Served

CHAT = b"/v1/chat/completions"
_CHUNK = 256 * 1024


class App:
    """A small ASGI app: echoes bodies on the proxied paths, streams, fails, waits."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.disconnects = 0
        self.chunks_sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            await self._whole(send, b"other " + scope["query_string"])
        elif body == b"boom":
            raise RuntimeError("the app broke")
        elif body == b"slow":
            await asyncio.sleep(1.5)
            await self._whole(send, b"slow done")
        elif body == b"stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-s", b"1")]})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await self.gate.wait()
            await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif body == b"big":
            head = [(b"content-type", b"application/octet-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            for _ in range(64):
                await send({"type": "http.response.body", "body": b"x" * _CHUNK, "more_body": True})
                self.chunks_sent += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif body == b"watch":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"watching", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnects += 1
        else:
            answer = {"path": scope["path"], "len": len(body)}
            answer["sha"] = hashlib.sha256(body).hexdigest()
            await self._whole(send, json.dumps(answer).encode())

    @staticmethod
    async def _whole(send: Any, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def lean(app: App) -> AsyncIterator[Served]:
    served = await Served(app, http=GatewayProtocol, timeout_keep_alive=1).start()
    yield served
    app.gate.set()
    await served.stop()


@pytest.fixture
async def stock(app: App) -> AsyncIterator[Served]:
    served = await Served(app, timeout_keep_alive=1).start()
    yield served
    await served.stop()


def request(path: bytes, body: bytes = b"", *extra: bytes, method: bytes = b"POST") -> bytes:
    head = [method + b" " + path + b" HTTP/1.1", b"host: t", b"content-length: %d" % len(body)]
    return b"\r\n".join([*head, *extra, b"", b""]) + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response: status, headers (lowercase names) and the body, chunked or counted."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return status, headers, body
    return status, headers, await reader.readexactly(int(headers.get(b"content-length", b"0")))


async def exchange_closing(port: int, raw: bytes) -> bytes:
    """Send raw bytes (asking the server to close after) and read all it answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return answer


def _without_date(answer: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", answer)


@pytest.mark.parametrize(
    "raw",
    [
        request(CHAT, b'{"model": "m"}', b"connection: close"),
        request(b"/v1/embeddings", b"x" * 100_000, b"connection: close"),
        request(CHAT, b"stream", b"connection: close"),
        request(CHAT, b"boom"),
        request(b"/v1/chat/completions?x=1", b"q", b"connection: close"),
        request(b"/elsewhere", b"", b"connection: close", method=b"GET"),
        b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["chat", "large", "stream", "error", "query", "get", "http10", "garbage"],
)
async def test_the_bytes_on_the_wire_are_uvicorns(
    lean: Served, stock: Served, app: App, raw: bytes
) -> None:
    app.gate.set()
    ours, theirs = await asyncio.gather(
        exchange_closing(lean.port, raw), exchange_closing(stock.port, raw)
    )
    assert _without_date(ours) == _without_date(theirs)
    assert ours.startswith(b"HTTP/1.1 ")


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(lean: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    bodies = [b"one", b"two" * 1000, b""]
    writer.write(
        request(CHAT, bodies[0])
        + request(b"/v1/embeddings", bodies[1])
        + request(b"/x", method=b"GET")
        + request(CHAT, b"three")
    )
    answers = [await read_response(reader) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    assert json.loads(answers[0][2]) == {
        "path": "/v1/chat/completions",
        "len": 3,
        "sha": hashlib.sha256(b"one").hexdigest(),
    }
    assert json.loads(answers[1][2])["len"] == 3000
    assert answers[2][2] == b"other "
    assert json.loads(answers[3][2])["len"] == 5
    for _ in range(20):  # and the connection goes on
        writer.write(request(CHAT, b"again"))
        assert (await read_response(reader))[0] == 200
    writer.close()


async def test_request_bodies_in_every_framing_arrive_whole(lean: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    big = bytes(range(256)) * 8192  # 2 MiB: the reading pauses and resumes on the way
    writer.write(request(CHAT, big))
    assert json.loads((await read_response(reader))[2])["sha"] == hashlib.sha256(big).hexdigest()

    chunks = [b"ab", b"c" * 70_000, b"d"]
    framed = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        + framed
    )
    answer = json.loads((await read_response(reader))[2])
    assert answer["sha"] == hashlib.sha256(b"".join(chunks)).hexdigest()

    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
        b"expect: 100-continue\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"hello")
    assert json.loads((await read_response(reader))[2])["len"] == 5
    writer.close()


async def test_a_streams_head_goes_out_before_its_events(lean: Served, app: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request(CHAT, b"stream"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"transfer-encoding: chunked" in head
    assert b"x-s: 1" in head
    first = await asyncio.wait_for(reader.readexactly(len(b"9\r\ndata: 1\n\n\r\n")), 5)
    assert first == b"9\r\ndata: 1\n\n\r\n"  # the first event, before the app goes on
    app.gate.set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"data: 2" in rest
    writer.close()


async def test_a_slow_reader_holds_the_stream_back(lean: Served, app: App) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", lean.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(request(CHAT, b"big"))
    await asyncio.sleep(1.0)
    held = app.chunks_sent
    assert held < 32, f"{held} chunks of 256 KiB sent to a client that reads nothing"
    _, _, body = await asyncio.wait_for(read_response(reader), 30)
    assert len(body) == 64 * _CHUNK
    assert app.chunks_sent == 64
    writer.close()


async def test_a_client_leaving_mid_answer_is_seen_by_the_app(lean: Served, app: App) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request(CHAT, b"watch"))
    await asyncio.wait_for(reader.readuntil(b"watching"), 5)
    writer.close()
    for _ in range(100):
        if app.disconnects:
            break
        await asyncio.sleep(0.02)
    assert app.disconnects == 1


async def test_an_idle_connection_closes_after_the_keep_alive_timeout(lean: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    # Busy for three timeouts, a request every 0.3 s and one that takes 1.5 s: kept open.
    for _ in range(10):
        writer.write(request(CHAT, b"hi"))
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.3)
    writer.write(request(CHAT, b"slow"))
    assert (await read_response(reader))[2] == b"slow done"
    await asyncio.sleep(0.5)
    writer.write(request(CHAT, b"hi"))
    assert (await read_response(reader))[0] == 200
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(1), 5) == b"", "closed once idle"
    idle = asyncio.get_running_loop().time() - started
    assert 0.9 < idle < 2.5
    writer.close()


async def test_an_app_error_is_a_500_and_the_connection_closes(lean: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request(CHAT, b"boom"))
    status, headers, body = await read_response(reader)
    assert (status, headers[b"connection"], body) == (500, b"close", b"Internal Server Error")
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()


async def test_a_graceful_stop_lets_a_proxied_call_finish(app: App) -> None:
    served = await Served(app, http=GatewayProtocol).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(request(CHAT, b"slow"))
    await asyncio.sleep(0.2)
    stopping = asyncio.create_task(served.stop())
    status, headers, body = await read_response(reader)
    assert (status, body, headers.get(b"connection")) == (200, b"slow done", b"close")
    await stopping
    writer.close()


class _Transport:
    """Records writes: enough of a transport for one exchange."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _exchange(transport: _Transport, keep_alive: bool = True) -> LeanExchange:
    from uvicorn.protocols.http.flow_control import FlowControl

    return LeanExchange(
        {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b""},
        transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        default_headers=[(b"server", b"t")],
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


@pytest.mark.unit
async def test_a_whole_answer_is_one_write_and_a_stream_is_framed() -> None:
    transport = _Transport()
    whole = _exchange(transport)
    headers = [(b"Content-Type", b"application/json"), (b"content-length", b"2")]
    await whole.send({"type": "http.response.start", "status": 200, "headers": headers})
    assert transport.writes == []
    await whole.send({"type": "http.response.body", "body": b"{}"})
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\nserver: t\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n{}"
    ]
    assert whole.response_complete

    transport = _Transport()
    stream = _exchange(transport, keep_alive=False)
    await stream.send({"type": "http.response.start", "status": 200, "headers": []})
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\nserver: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
    ]
    await stream.send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await stream.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert transport.writes[1:] == [b"3\r\nabc\r\n", b"0\r\n\r\n"]
    assert transport.closed


@pytest.mark.unit
async def test_bad_headers_and_wrong_lengths_are_refused() -> None:
    for headers in ([(b"bad name", b"v")], [(b"x", b"a\r\nb")]):
        with pytest.raises(RuntimeError, match="Invalid HTTP header"):
            await _exchange(_Transport()).send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
    counted = _exchange(_Transport())
    await counted.send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
    )
    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        await counted.send({"type": "http.response.body", "body": b"too long"})


@pytest.mark.unit
async def test_an_exchange_is_freed_as_soon_as_it_is_done() -> None:
    """No reference cycle: at 500 connections, exchanges left to the garbage collector held
    tens of MB more."""
    gc.disable()
    try:
        exchange = _exchange(_Transport())
        exchange.more_body = False
        await exchange.run(App())  # type: ignore[arg-type]
        assert exchange.response_complete
        freed = weakref.ref(exchange)
        del exchange
        assert freed() is None
    finally:
        gc.enable()
