"""The HTTP server edge on real sockets, for the gateway's protocol and the one every other
service runs (``shared.http_server.HttpProtocol``): heads bounded whatever is sent, heads and
bodies timed, the connection limit, the Host check, an early answer to ``100-continue``.

Stock uvicorn fails each of these (``test_stock_uvicorn_fails_them``' cases show how)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.transport.http_protocol import GatewayProtocol
from shared.http_limits import HttpSettings
from shared.http_server import HttpProtocol
from tests.served import Served

CHAT = b"/v1/chat/completions"  # the gateway's lean path; an ordinary route for the other
LIMITS = HttpSettings(
    max_url_bytes=8192,
    max_header_bytes=32768,
    head_timeout_s=1.5,
    min_body_rate=2000,
    body_grace_s=1.0,
    max_connections=2500,
)


class App:
    """Answers /healthz; reads and measures bodies; ``authorization: Bearer bad`` is a 401 at
    once (the body never read); ``x-wait: <s>`` waits before reading."""

    def __init__(self) -> None:
        self.disconnects = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        if scope["path"] == "/healthz":
            await self._whole(send, 200, b"ok")
            return
        if headers.get(b"authorization") == b"Bearer bad":
            await self._whole(send, 401, b'{"error": "bad key"}')
            return
        await asyncio.sleep(float(headers.get(b"x-wait", b"0")))
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        client = scope["client"][0] if scope.get("client") else ""
        await self._whole(send, 200, json.dumps({"len": size, "client": client}).encode())

    @staticmethod
    async def _whole(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture(params=[GatewayProtocol, HttpProtocol], ids=["gateway", "shared"])
async def served(request: pytest.FixtureRequest, app: App) -> AsyncIterator[Served]:
    protocol = request.param.configured(LIMITS)
    server = await Served(app, http=protocol, timeout_keep_alive=5).start()
    yield server
    await server.stop()


def request(path: bytes = CHAT, body: bytes = b"", *extra: bytes, method: bytes = b"POST") -> bytes:
    head = [method + b" " + path + b" HTTP/1.1", b"host: t", b"content-length: %d" % len(body)]
    return b"\r\n".join([*head, *extra, b"", b""]) + body


class Conn:
    """A raw client socket in this event loop: what it sends, what it reads, until the end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.received = b""
        self.closed = False  # the server closed (EOF or reset)

    @classmethod
    async def open(cls, port: int) -> Conn:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> bool:
        """False once the server no longer takes what is sent."""
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            return False
        return True

    async def read_answer(self, timeout: float = 5.0) -> tuple[int, dict[bytes, bytes], bytes]:
        """One whole answer (with content-length); the data the server sent before a reset
        is still read."""
        deadline = self.loop.time() + timeout
        while True:
            head, sep, rest = self.received.partition(b"\r\n\r\n")
            if sep:
                lines = head.split(b"\r\n")
                headers = dict(line.split(b": ", 1) for line in lines[1:])
                length = int(headers.get(b"content-length", b"0"))
                if len(rest) >= length:
                    self.received = rest[length:]
                    return int(lines[0].split()[1]), headers, rest[:length]
            if not await self._more(deadline - self.loop.time()):
                raise AssertionError(f"no whole answer; got {self.received[:300]!r}")

    async def wait_closed(self, timeout: float) -> bool:
        """True once the server closed the connection (within timeout)."""
        deadline = self.loop.time() + timeout
        while not self.closed:
            if not await self._more(deadline - self.loop.time()):
                return self.closed
        return True

    async def _more(self, timeout: float) -> bool:
        if self.closed or timeout <= 0:
            return False
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.received += data
        return True

    def close(self) -> None:
        self.sock.close()


async def healthz_latency(port: int, stop: asyncio.Event) -> float:
    """The longest wait for /healthz, asked again and again on one connection until stop."""
    conn = await Conn.open(port)
    worst = 0.0
    try:
        while not stop.is_set():
            started = time.perf_counter()
            await conn.send(request(b"/healthz", method=b"GET"))
            status, _, _ = await conn.read_answer(timeout=30)
            assert status == 200
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.005)
    finally:
        conn.close()
    return worst


async def flood(port: int, head: bytes, total: int) -> tuple[float, int, dict[bytes, bytes], bytes]:
    """Send head, then total bytes more of it, 64 KiB a time, while reading the answer: the
    seconds until it came, and the answer."""
    conn = await Conn.open(port)
    started = time.perf_counter()
    piece = b"a" * 65536

    async def sending() -> None:
        if await conn.send(head):
            for _ in range(total // len(piece)):
                if not await conn.send(piece):
                    return
            await conn.send(piece[: total % len(piece)])

    sender = asyncio.create_task(sending())
    try:
        status, headers, body = await conn.read_answer(timeout=60)
        took = time.perf_counter() - started
        assert await conn.wait_closed(5)
    finally:
        sender.cancel()
        conn.close()
    return took, status, headers, body


def error_of(body: bytes) -> dict[str, Any]:
    """The error of OpenAI's shape an answer carries."""
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["message"]
    return dict(error)


MIB = 1024 * 1024


async def test_64_mib_of_header_is_refused_at_once_and_others_are_served(served: Served) -> None:
    stop = asyncio.Event()
    prober = asyncio.create_task(healthz_latency(served.port, stop))
    await asyncio.sleep(0.05)
    head = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: "
    floods = await asyncio.gather(*(flood(served.port, head, 64 * MIB) for _ in range(4)))
    stop.set()
    worst = await prober
    for took, status, headers, body in floods:
        assert status == 431
        assert headers[b"connection"] == b"close"
        assert error_of(body)["code"] == "request_header_fields_too_large"
        assert took < 1.0, f"431 after {took:.2f} s"
    assert worst < 0.5, f"/healthz waited {worst:.2f} s during the floods"


async def test_a_head_just_past_the_bound_is_431_and_one_within_is_served(served: Served) -> None:
    within = Conn.open(served.port)
    conn = await within
    filler = b"x-fill: " + b"f" * (LIMITS.max_header_bytes - 200)
    await conn.send(request(CHAT, b"hi", filler))
    assert (await conn.read_answer())[0] == 200
    conn.close()

    conn = await Conn.open(served.port)
    filler = b"x-fill: " + b"f" * LIMITS.max_header_bytes
    await conn.send(request(CHAT, b"hi", filler))
    status, headers, body = await conn.read_answer()
    assert (status, headers[b"connection"]) == (431, b"close")
    assert error_of(body)["type"] == "invalid_request_error"
    assert await conn.wait_closed(2)
    conn.close()


@pytest.mark.parametrize("size", [9 * 1024, 64 * MIB])
async def test_a_huge_url_is_414(served: Served, size: int) -> None:
    took, status, headers, body = await flood(served.port, b"GET /" + b"u" * 1024, size)
    assert (status, headers[b"connection"]) == (414, b"close")
    assert error_of(body)["code"] == "request_uri_too_long"
    assert took < 1.0

    whole = await Conn.open(served.port)  # in one piece with its head, and just within
    await whole.send(request(b"/healthz?" + b"q" * (LIMITS.max_url_bytes + 1), method=b"GET"))
    assert (await whole.read_answer())[0] == 414
    whole.close()
    within = await Conn.open(served.port)
    await within.send(request(b"/healthz?" + b"q" * (LIMITS.max_url_bytes - 20), method=b"GET"))
    assert (await within.read_answer())[0] == 200
    within.close()


async def test_a_head_trickled_byte_by_byte_is_408_at_the_head_timeout(served: Served) -> None:
    conn = await Conn.open(served.port)
    started = asyncio.get_running_loop().time()
    for byte in b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-slow: " + b"s" * 100:
        if not await conn.send(bytes([byte])) or conn.received:
            break
        await asyncio.sleep(0.05)
    status, headers, body = await conn.read_answer(timeout=5)
    took = asyncio.get_running_loop().time() - started
    assert (status, headers[b"connection"]) == (408, b"close")
    assert error_of(body)["code"] == "request_timeout"
    assert LIMITS.head_timeout_s - 0.1 < took < LIMITS.head_timeout_s + 1.0
    assert await conn.wait_closed(2)
    conn.close()


async def test_a_keep_alive_connection_times_each_head_from_its_first_byte(served: Served) -> None:
    conn = await Conn.open(served.port)
    await asyncio.sleep(1.0)  # within the new connection's head timeout
    await conn.send(request(CHAT, b"one"))
    assert (await conn.read_answer())[0] == 200
    await asyncio.sleep(2.0)  # idle past the head timeout: the keep-alive timer's to judge
    await conn.send(request(CHAT, b"two")[:20])
    started = asyncio.get_running_loop().time()
    status, _, _ = await conn.read_answer(timeout=5)
    took = asyncio.get_running_loop().time() - started
    assert status == 408
    assert LIMITS.head_timeout_s - 0.1 < took < LIMITS.head_timeout_s + 1.0
    conn.close()


async def test_2000_idle_connections_are_closed_at_the_head_timeout(served: Served) -> None:
    idle = [await Conn.open(served.port) for _ in range(2000)]
    try:
        opened = asyncio.get_running_loop().time()
        conn = await Conn.open(served.port)  # a real request still gets through
        await conn.send(request(CHAT, b"hello"))
        assert json.loads((await conn.read_answer())[2])["len"] == 5
        conn.close()
        closed = await asyncio.gather(*(c.wait_closed(LIMITS.head_timeout_s + 3) for c in idle))
        took = asyncio.get_running_loop().time() - opened
        assert all(closed), f"{closed.count(False)} of 2000 still open after {took:.1f} s"
        assert all(c.received == b"" for c in idle), "nothing came: closed without an answer"
    finally:
        for c in idle:
            c.close()


def head_of(path: bytes, length: int, *extra: bytes, method: bytes = b"POST") -> bytes:
    """A request's head announcing a body of length bytes."""
    head = [method + b" " + path + b" HTTP/1.1", b"host: t", b"content-length: %d" % length]
    return b"\r\n".join([*head, *extra, b"", b""])


async def test_a_body_slower_than_the_minimum_rate_is_408(served: Served, app: App) -> None:
    conn = await Conn.open(served.port)
    started = asyncio.get_running_loop().time()
    await conn.send(head_of(CHAT, 100_000))

    async def trickle() -> None:
        while await conn.send(b"b" * 50):  # 500 bytes/s, a quarter of the minimum
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    status, headers, body = await conn.read_answer(timeout=10)
    took = asyncio.get_running_loop().time() - started
    sender.cancel()
    assert (status, headers[b"connection"]) == (408, b"close")
    assert error_of(body)["code"] == "request_timeout"
    assert LIMITS.body_grace_s <= took < LIMITS.body_grace_s + 2.5
    assert await conn.wait_closed(2)
    conn.close()
    for _ in range(50):
        if app.disconnects:
            break
        await asyncio.sleep(0.02)
    assert app.disconnects == 1, "the app was told the client is gone"


async def test_a_slow_body_after_an_early_answer_is_cut_without_a_second_answer(
    served: Served,
) -> None:
    conn = await Conn.open(served.port)
    started = asyncio.get_running_loop().time()
    await conn.send(head_of(CHAT, 100_000, b"authorization: Bearer bad"))
    assert (await conn.read_answer())[0] == 401  # answered before the body came

    async def trickle() -> None:
        while await conn.send(b"b" * 50):
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    assert await conn.wait_closed(LIMITS.body_grace_s + 3)
    took = asyncio.get_running_loop().time() - started
    sender.cancel()
    assert took < LIMITS.body_grace_s + 2.5
    assert conn.received == b"", "nothing after the answer: a 408 would read as the next one"
    conn.close()


async def test_a_body_at_the_minimum_rate_or_held_back_by_the_app_is_served(
    served: Served,
) -> None:
    steady = await Conn.open(served.port)
    await steady.send(head_of(CHAT, 8000))
    for _ in range(20):  # 4,000 bytes/s for two seconds
        await steady.send(b"b" * 400)
        await asyncio.sleep(0.1)
    assert json.loads((await steady.read_answer())[2])["len"] == 8000
    steady.close()

    # 200 KiB sent at once, the app taking none of it for 3 s: the reading pauses (flow
    # control) and that time is not the client's.
    held = await Conn.open(served.port)
    await held.send(head_of(CHAT, 200 * 1024, b"x-wait: 3") + b"h" * 200 * 1024)
    status, _, body = await held.read_answer(timeout=10)
    assert (status, json.loads(body)["len"]) == (200, 200 * 1024)
    held.close()


async def test_one_connection_over_the_limit_is_503(app: App) -> None:
    protocol = HttpProtocol.configured(LIMITS.model_copy(update={"max_connections": 3}))
    server = await Served(app, http=protocol).start()
    conns = [await Conn.open(server.port) for _ in range(3)]
    try:
        for conn in conns:
            await conn.send(request(CHAT, b"in"))
            assert (await conn.read_answer())[0] == 200
        over = await Conn.open(server.port)
        await over.send(request(CHAT, b"over"))
        status, headers, body = await over.read_answer()
        assert (status, headers[b"connection"], headers[b"retry-after"]) == (503, b"close", b"1")
        error = error_of(body)
        assert (error["type"], error["code"]) == ("server_error", "too_many_connections")
        assert await over.wait_closed(2)
        over.close()
        conns.pop().close()  # one leaves: room for another
        for _ in range(50):
            again = await Conn.open(server.port)
            await again.send(request(CHAT, b"again"))
            status = (await again.read_answer())[0]
            again.close()
            if status == 200:
                break
            await asyncio.sleep(0.02)
        assert status == 200
    finally:
        for conn in conns:
            conn.close()
        await server.stop()


@pytest.mark.parametrize("hosts", [(), (b"host: a", b"host: b")], ids=["no-host", "two-hosts"])
async def test_an_http11_request_without_exactly_one_host_is_400(
    served: Served, hosts: tuple[bytes, ...]
) -> None:
    conn = await Conn.open(served.port)
    head = [b"POST /v1/chat/completions HTTP/1.1", *hosts, b"content-length: 2"]
    await conn.send(b"\r\n".join([*head, b"", b""]) + b"hi")
    status, headers, body = await conn.read_answer()
    assert (status, headers[b"connection"]) == (400, b"close")
    assert error_of(body)["code"] == "invalid_host_header"
    assert await conn.wait_closed(2)
    conn.close()

    http10 = await Conn.open(served.port)  # HTTP/1.0 needs no Host
    await http10.send(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
    assert (await http10.read_answer())[0] == 200
    http10.close()


@pytest.mark.parametrize("path", [CHAT, b"/elsewhere"], ids=["proxied", "other"])
async def test_an_answer_before_100_continue_closes_the_connection(
    served: Served, path: bytes
) -> None:
    conn = await Conn.open(served.port)
    await conn.send(head_of(path, 5, b"expect: 100-continue", b"authorization: Bearer bad"))
    status, headers, _ = await conn.read_answer()
    assert status == 401
    assert not conn.received.startswith(b"HTTP/1.1 100"), "no 100 before the answer"
    assert headers[b"connection"] == b"close"
    # The client did not send the body: its next request must not be taken as it.
    await conn.send(request(b"/healthz", method=b"GET"))
    assert await conn.wait_closed(2)
    assert conn.received == b"", "the next request was answered as if it were a body"
    conn.close()

    # A client that sent the body anyway keeps its connection.
    sent = await Conn.open(served.port)
    head = head_of(path, 5, b"expect: 100-continue", b"authorization: Bearer bad")
    await sent.send(head + b"hello")
    assert (await sent.read_answer())[0] == 401
    await sent.send(request(b"/healthz", method=b"GET"))
    assert (await sent.read_answer())[2] == b"ok"
    sent.close()

    # And one whose body the app reads gets its 100, then its answer, on a kept connection.
    read = await Conn.open(served.port)
    await read.send(head_of(path, 5, b"expect: 100-continue"))
    deadline = asyncio.get_running_loop().time() + 5
    while b"\r\n\r\n" not in read.received:
        assert await read._more(deadline - asyncio.get_running_loop().time())
    assert read.received == b"HTTP/1.1 100 Continue\r\n\r\n"
    read.received = b""
    await read.send(b"hello")
    assert json.loads((await read.read_answer())[2])["len"] == 5
    await read.send(request(b"/healthz", method=b"GET"))
    assert (await read.read_answer())[2] == b"ok"
    read.close()
