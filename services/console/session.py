"""Server-side sessions: the cookie carries only a random id; the credential never leaves.

A session holds the credential it signed in with (the operator token or an admin key) and
the principal the key service answered for it; every API call the console makes for the
session carries that credential, so the APIs decide what it may see and do. Sessions live in
this process's memory only (a restart signs everyone out) and end after an idle time and
after a maximum age. The store keys them by the SHA-256 of the cookie value, so the table
never holds a usable cookie. A session started by a single sign-on proxy is bound to the
SHA-256 of the admin key the proxy sent (``bound_key``), and ends when the proxy sends
another.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import SecretStr

from services.console.access import Principal

COOKIE_NAME = "tollgate_console_session"
MAX_TRACKED_CLIENTS = 10_000
FlashKind = Literal["success", "error"]


@dataclass
class Session:
    """One signed-in browser: who it is, its credential, its CSRF token and the messages to
    show on its next page."""

    csrf_token: str
    created_at: float
    last_seen: float
    credential: SecretStr = field(repr=False)
    principal: Principal
    bound_key: str | None = None  # SHA-256 of a proxy's admin key (TOLLGATE_CONSOLE_PROXY_AUTH)
    flashes: list[tuple[FlashKind, str]] = field(default_factory=list)

    def flash(self, message: str, kind: FlashKind = "success") -> None:
        """Show message once, on the next page this session renders."""
        self.flashes.append((kind, message))

    def take_flashes(self) -> list[tuple[FlashKind, str]]:
        """The pending messages, cleared."""
        out, self.flashes = self.flashes, []
        return out


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def key_digest(secret: str) -> str:
    """The SHA-256 of an admin key, which a session started by a proxy is bound to."""
    return _digest(secret)


class SessionStore:
    """Sessions by cookie value, with idle and absolute expiry."""

    def __init__(
        self, idle_s: float, max_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(
        self, credential: SecretStr, principal: Principal, *, bound_key: str | None = None
    ) -> tuple[str, Session]:
        """A new session of principal, signed in with credential, and the cookie value that
        names it (256 random bits)."""
        self._purge()
        raw = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            credential=credential,
            principal=principal,
            bound_key=bound_key,
        )
        self._sessions[_digest(raw)] = session
        return raw, session

    def get(self, raw: str | None) -> Session | None:
        """The live session a cookie value names, touched; None when unknown or expired."""
        if not raw:
            return None
        key = _digest(raw)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle_s or now - session.created_at > self.max_s:
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def delete(self, raw: str | None) -> None:
        """End the session a cookie value names (sign-out)."""
        if raw:
            self._sessions.pop(_digest(raw), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self) -> None:
        now = self._clock()
        expired = [
            key
            for key, s in self._sessions.items()
            if now - s.last_seen > self.idle_s or now - s.created_at > self.max_s
        ]
        for key in expired:
            del self._sessions[key]


class SignInThrottle:
    """At most ``limit`` failed sign-ins per client address in any sliding minute."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> bool:
        """True when client used up its failed attempts for now."""
        window = self._window(client)
        return len(window) >= self.limit

    def failed(self, client: str) -> None:
        """Count one failed sign-in of client."""
        self._window(client).append(self._clock())
        if len(self._failures) > MAX_TRACKED_CLIENTS:  # many addresses: forget the quiet ones
            for quiet in [c for c in self._failures if not self._window(c)]:
                del self._failures[quiet]

    def succeeded(self, client: str) -> None:
        """Forget client's failures."""
        self._failures.pop(client, None)

    def _window(self, client: str) -> deque[float]:
        window = self._failures.setdefault(client, deque())
        cutoff = self._clock() - 60.0
        while window and window[0] < cutoff:
            window.popleft()
        return window
