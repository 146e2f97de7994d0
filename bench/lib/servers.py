"""The benchmark's servers as real processes: the raw upstream and a gateway run as
``make up`` runs it (``deploy/system.py``), on the local stack's Kafka and Redis (or the
TOLLGATE_TEST_* servers when set), with a topic prefix, a Redis prefix and a key of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from deploy.ports import free_port
from deploy.secure import ADMIN_USER, SecureEngines, SecurePorts
from deploy.stack import DEFAULT_RUN_DIR, Endpoints, Stack
from deploy.system import SERVICES
from shared.apikeys import generate, hash_key, hint
from shared.events import KeyEvent
from shared.kafka_security import KafkaAccess, kafka_options
from shared.policy import Budget, RateLimits
from shared.state_mac import Keyring, new_keyring_text
from shared.topics import KEYS_EVENTS

REPO = Path(__file__).resolve().parents[2]
# The keyring of the gateways the benchmarks start, and of the key events they publish.
STATE_MAC_KEYS = new_keyring_text("bench")
KEYRING = Keyring.parse(SecretStr(STATE_MAC_KEYS), "STATE_MAC_KEYS")


def stack_endpoints() -> Endpoints:
    """The TOLLGATE_TEST_* Kafka and Redis when both are set, else the local stack's."""
    kafka = os.environ.get("TOLLGATE_TEST_KAFKA_BOOTSTRAP")
    redis = os.environ.get("TOLLGATE_TEST_REDIS_URL")
    if kafka and redis:
        return Endpoints(kafka, os.environ.get("TOLLGATE_TEST_DATABASE_URL", ""), redis)
    return Stack().up()


def upstream_argv(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bench.lib.raw_upstream:app", "--host", "127.0.0.1",
        "--port", str(port), "--http", "httptools", "--loop", "uvloop", "--no-access-log",
        "--log-level", "warning", "--backlog", "4096", "--timeout-keep-alive", "75",
    ]  # fmt: skip


def gateway_argv(port: int) -> list[str]:
    """Exactly the argv ``make up`` gives a gateway replica, on another port."""
    (gateway,) = (s for s in SERVICES if s.name == "gateway")
    argv = list(gateway.argv)
    argv[argv.index("--port") + 1] = str(port)
    return argv


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


async def wait_status(
    url: str, want: int = 200, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> None:
    """Poll url until it answers want (a GET, or a POST of a tiny chat when headers are given)."""
    deadline = time.monotonic() + timeout
    last: object = None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                if headers is None:
                    async with session.get(url) as answer:
                        last = answer.status
                else:
                    body = {
                        "model": "Qwen/Qwen2.5-0.5B-Instruct",
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                    async with session.post(url, json=body, headers=headers) as answer:
                        last = answer.status
                if last == want:
                    return
            except (aiohttp.ClientError, OSError) as exc:
                last = exc
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer {want} within {timeout}s (last: {last!r})")


# A key whose every limit and budget is checked on each request but never reached: the
# policy arm of the benchmark measures what checking costs, not what refusing does.
POLICY: dict[str, Any] = {
    "rate_limits": RateLimits(requests_per_minute=10**9, tokens_per_minute=10**12),
    "budget": Budget(limit_usd=Decimal(10**8), period="month"),
    "project_rate_limits": RateLimits(requests_per_minute=10**9),
}


async def publish_key(bootstrap: str | KafkaAccess, prefix: str, **policy: Any) -> str:
    """A new key announced on the prefix's keys topic; the full secret stays in memory only."""
    secret = generate()
    event = KeyEvent(
        type="key.created",
        occurred_at=datetime.now(UTC),
        key_id="key_bench_" + uuid.uuid4().hex[:8],
        project_id="proj_bench",
        name="bench",
        hint=hint(secret),
        key_hash=hash_key(secret),
        version=1,
        **policy,
    )
    event = KEYRING.sign(event)  # as the key service signs it (shared/state_mac.py)
    producer = AIOKafkaProducer(**kafka_options(bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(prefix + KEYS_EVENTS, event.to_bytes(), key=b"bench")
    finally:
        await producer.stop()
    return secret


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Drop the run's topics so a long-lived broker does not pile up partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@dataclass
class Servers:
    """The two processes under test and how to reach them."""

    upstream: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    upstream_url: str
    gateway_url: str
    headers: dict[str, str]
    policy_headers: dict[str, str]
    prefix: str
    endpoints: Endpoints
    work: Path
    secure: bool = False  # on the secured engines (deploy/secure.py): its topics are kept
    redis_options: dict[str, Any] = field(default_factory=dict)  # the benchmark's own reads
    env: dict[str, str] = field(default_factory=dict)  # the gateway's (another starts from it)

    def stop(self) -> None:
        for process in (self.gateway, self.upstream):
            process.terminate()
        for process in (self.gateway, self.upstream):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


async def start(work: Path, *, secure: bool = False) -> Servers:
    """The upstream and a gateway; with secure, the gateway on the secured engines with its
    own credentials over TLS (the topics unprefixed, as their ACLs name them)."""
    own: dict[str, str] = {}
    redis_options: dict[str, Any] = {}
    publisher: str | KafkaAccess
    if secure:
        engines = SecureEngines(DEFAULT_RUN_DIR, SecurePorts.from_env())
        engines.up()
        endpoints = engines.endpoints()
        prefix = ""
        redis_prefix = f"tollgate:bench-{uuid.uuid4().hex[:8]}:"
        own = {f"TOLLGATE_GATEWAY_{k}": v for k, v in engines.service_settings("gateway").items()}
        redis_options = engines.redis_auth(ADMIN_USER).options(endpoints.redis_url)
        publisher = engines.kafka_access("keys")  # key events, as the key service writes them
    else:
        endpoints = stack_endpoints()
        prefix = f"bench-{uuid.uuid4().hex[:8]}."
        redis_prefix = f"{prefix}gw:"
        publisher = endpoints.kafka_bootstrap
    upstream_port, gateway_port = free_port(), free_port()
    catalogue = work / "models.yaml"
    catalogue.write_text(
        (REPO / "deploy" / "models.yaml").read_text().replace("8090", str(upstream_port))
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOLLGATE_DEMO_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "TOLLGATE_GATEWAY_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "TOLLGATE_GATEWAY_REDIS_URL": endpoints.redis_url,
        "TOLLGATE_GATEWAY_TOPIC_PREFIX": prefix,
        "TOLLGATE_GATEWAY_REDIS_PREFIX": redis_prefix,
        "TOLLGATE_GATEWAY_INTERNAL_TOKEN": uuid.uuid4().hex,
        "TOLLGATE_GATEWAY_STATE_MAC_KEYS": STATE_MAC_KEYS,
        "TOLLGATE_GATEWAY_KEYS_URL": f"http://127.0.0.1:{free_port()}",
        # No billing: the policy key's budget starts from zero (and says so once in the log).
        "TOLLGATE_GATEWAY_BILLING_URL": f"http://127.0.0.1:{free_port()}",
        "TOLLGATE_GATEWAY_CATALOGUE_PATH": str(catalogue),
        "TOLLGATE_GATEWAY_SPOOL_DIR": str(work / "spool"),
        "TOLLGATE_GATEWAY_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        **own,
    }
    upstream = spawn(upstream_argv(upstream_port), env, work / "upstream.log")
    gateway = spawn(gateway_argv(gateway_port), env, work / "gateway.log")
    servers = Servers(
        upstream, gateway, f"http://127.0.0.1:{upstream_port}",
        f"http://127.0.0.1:{gateway_port}", {}, {}, prefix, endpoints, work, secure,
        redis_options, env,
    )  # fmt: skip
    try:
        await wait_status(servers.upstream_url + "/healthz")
        await wait_status(servers.gateway_url + "/readyz")
        secret = await publish_key(publisher, prefix)
        servers.headers = {"Authorization": f"Bearer {secret}"}
        # The key reaches the gateway through Kafka: wait until it is accepted.
        chat = servers.gateway_url + "/v1/chat/completions"
        await wait_status(chat, 200, servers.headers, timeout=60)
        policy_secret = await publish_key(publisher, prefix, **POLICY)
        servers.policy_headers = {"Authorization": f"Bearer {policy_secret}"}
        await wait_status(chat, 200, servers.policy_headers, timeout=60)
    except BaseException:
        servers.stop()
        raise
    return servers
