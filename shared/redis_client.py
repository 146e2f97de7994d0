"""Redis for every service: one node or a Redis Cluster, chosen by a setting; Lua by SHA-1.

With ``redis_cluster`` set, ``redis_url`` names any node of the cluster (the client finds the
others); every key a script or a pipeline entry touches shares a hash tag (``{...}``), so each
call runs on one slot. Publishing needs no care: a cluster broadcasts ``PUBLISH`` to every
node, so a subscriber may listen on any one of them (``subscription_urls``).

``LuaScript`` calls a script by its SHA-1 and loads it again when Redis lost its script cache
(a restart, a failover to a replica that never saw it); ``run_many`` pipelines many calls and
sends again only those Redis refused for want of the script, so none is applied twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"


class RedisSettingsError(ValueError):
    """The Redis settings contradict each other (TLS files with a plaintext URL, say)."""


@dataclass(frozen=True)
class RedisAuth:
    """TLS and ACL credentials for Redis: a ``rediss://`` URL is TLS with the server's
    certificate and host name checked (against ``ca_certs``, else the system's CAs), and a
    client certificate and key make it mutual; ``username`` and ``password`` (an ACL user)
    are sent as ``AUTH`` on every connection, and win over any in the URL. Nothing falls back
    to plaintext: TLS files with a ``redis://`` URL are refused."""

    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    username: str | None = None
    password: SecretStr | None = None

    def check(self, url: str) -> None:
        """RedisSettingsError, naming the setting, when these cannot be used with url."""
        tls = urlsplit(url).scheme == "rediss"
        files = {
            "REDIS_SSL_CA_CERTS": self.ca_certs,
            "REDIS_SSL_CERTFILE": self.certfile,
            "REDIS_SSL_KEYFILE": self.keyfile,
        }
        if not tls and any(files.values()):
            raise RedisSettingsError(
                "REDIS_SSL_* files are set but REDIS_URL is redis://: use rediss:// for TLS"
            )
        if (self.certfile is None) != (self.keyfile is None):
            raise RedisSettingsError("REDIS_SSL_CERTFILE and REDIS_SSL_KEYFILE go together")
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise RedisSettingsError(f"{name}: no readable file at {path}")

    def options(self, url: str) -> dict[str, Any]:
        """redis-py's connection keyword arguments for url."""
        out: dict[str, Any] = {}
        if urlsplit(url).scheme == "rediss":
            out |= {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if self.ca_certs is not None:
                out["ssl_ca_certs"] = str(self.ca_certs)
            if self.certfile is not None and self.keyfile is not None:
                out |= {"ssl_certfile": str(self.certfile), "ssl_keyfile": str(self.keyfile)}
        if self.username:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password.get_secret_value()
        return out


PLAIN = RedisAuth()
# What a Redis call may raise when Redis is away: redis-py's errors, the socket's, and the
# cluster client's own RedisClusterException (no RedisError: raised when it cannot rebuild
# its slot map, no node answering or nodes disagreeing on a slot during a failover).
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
Call = tuple[Sequence[str], Sequence[Any]]  # (keys, args) of one script call


def connect(
    url: str,
    *,
    cluster: bool,
    timeout_s: float,
    max_connections: int = 200,
    auth: RedisAuth = PLAIN,
) -> RedisClient:
    """A client with no retries of its own (callers bound and count their failures)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            **auth.options(url),
        )
    return connect_one(url, timeout_s=timeout_s, max_connections=max_connections, auth=auth)


def connect_one(
    url: str, *, timeout_s: float, max_connections: int = 200, auth: RedisAuth = PLAIN
) -> aioredis.Redis:
    """A client of one node (a subscriber's, even on a cluster), no retries of its own."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        max_connections=max_connections,
        **auth.options(url),
    )


def subscription_urls(url: str, client: RedisClient) -> list[str]:
    """Where a subscriber may listen: the configured node first, then every node the cluster
    client knows (any node hears every ``PUBLISH``); just the URL for a single node."""
    if not isinstance(client, RedisCluster):
        return [url]
    parts = urlsplit(url)
    urls = [url]
    for node in client.get_nodes():
        netloc = f"{node.host}:{node.port}"
        if parts.username or parts.password:
            netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
        candidate = urlunsplit((parts.scheme, netloc, "", parts.query, ""))
        if candidate not in urls:
            urls.append(candidate)
    return urls


class LuaScript:
    """One Lua script, called by its SHA-1 (cheaper than redis-py's Script objects, which ask
    SCRIPT EXISTS before every pipeline)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)

    async def __call__(self, client: RedisClient, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_many(self, client: RedisClient, calls: Sequence[Call]) -> list[Any]:
        """Every call in one pipeline (per node, on a cluster); answers in order."""
        answers: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            async with client.pipeline(transaction=False) as pipe:
                for i in pending:
                    keys, args = calls[i]
                    # A cluster pipeline refuses evalsha() by name, not the command itself.
                    pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
                got = await pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(pending, got, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    answers[i] = answer
            if not missing:
                return answers
            if attempt == 0:
                await client.script_load(self.source)
                pending = missing
        raise NoScriptError("a script could not be loaded")
