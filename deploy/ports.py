"""Free TCP ports on 127.0.0.1 for servers that tests and benchmarks start and stop.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the same range
it takes source ports from for outgoing connections: between the probe and the server's own
``bind`` any client connection (a Kafka producer, a test's HTTP client) may take it, and the
server then dies with "Address already in use". So ports are drawn below that range, where
no outgoing connection lands, and never twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000  # above the fixed ports of the local stack (16379, 19092, ...)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def ephemeral_floor(path: Path = _EPHEMERAL_RANGE) -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 if unreadable)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int) -> bool:
    """True when nothing holds ``port`` on 127.0.0.1 right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nobody listens on, outside the ephemeral range, not handed out before."""
    ceiling = ephemeral_floor()
    if ceiling - LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(LOWEST, ceiling)
            if port not in _handed_out and bindable(port):
                _handed_out.add(port)
                return port
    # A kernel whose ephemeral range starts low leaves no room below it: fall back to it.
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free TCP port on 127.0.0.1")
