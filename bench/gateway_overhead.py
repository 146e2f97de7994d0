"""What the gateway adds: the same load straight at the demo upstream and through the gateway.

Starts the demo upstream and a gateway as real processes (uvicorn, as ``make up`` does) on free
ports, on the local stack's Kafka and Redis, with a key of its own published on a topic prefix
of its own. For 1, 50 and 500 concurrent clients it sends the same chat completion directly and
through the gateway, in this one run, and prints p50/p99 latency, the added latency, the
throughput ratio and the gateway's own ``x-tollgate-overhead-ms``. Figures, not assertions: the
load generator shares the machine with both servers, so read them as relative.

    uv run --frozen python bench/gateway_overhead.py [--requests 2000] [--levels 1,50,500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from deploy.stack import Stack
from shared.apikeys import generate, hash_key, hint
from shared.events import KeyEvent
from shared.topics import KEYS_EVENTS

REPO = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "benchmark me"}], "max_tokens": 8}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "uvicorn", app, "--factory", "--port", str(port)]
    argv += ["--no-access-log", "--log-level", os.environ.get("BENCH_UVICORN_LOG", "warning")]
    argv += ["--backlog", "4096"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


async def publish_key(bootstrap: str, prefix: str) -> str:
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
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(prefix + KEYS_EVENTS, event.to_bytes(), key=b"bench")
    finally:
        await producer.stop()
    return secret


async def load(
    url: str, headers: dict[str, str], clients: int, total: int
) -> tuple[list[float], list[float], float]:
    """Latencies (s), gateway overheads (ms) and elapsed time of total requests by N clients."""
    latencies: list[float] = []
    overheads: list[float] = []
    errors: list[str] = []
    remaining = total
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    answer = await client.post(url, json=BODY, headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    errors.append(str(answer.status_code))
                    continue
                if "x-tollgate-overhead-ms" in answer.headers:
                    overheads.append(float(answer.headers["x-tollgate-overhead-ms"]))

        await asyncio.gather(*(worker() for _ in range(min(clients, 20))))  # warm-up
        latencies.clear()
        overheads.clear()
        errors.clear()
        remaining = total
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    if errors:
        print(f"  {url}: {len(errors)} failed requests: {sorted(set(errors))}")
    return latencies, overheads, elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level and path")
    parser.add_argument("--levels", default="1,50,500", help="concurrent clients, comma-separated")
    args = parser.parse_args()
    endpoints = Stack().up()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    upstream_port, gateway_port = free_port(), free_port()
    catalogue = work / "models.yaml"
    catalogue.write_text(
        (REPO / "deploy" / "models.yaml").read_text().replace("8090", str(upstream_port))
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOLLGATE_GATEWAY_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "TOLLGATE_GATEWAY_REDIS_URL": endpoints.redis_url,
        "TOLLGATE_GATEWAY_TOPIC_PREFIX": prefix,
        "TOLLGATE_GATEWAY_REDIS_PREFIX": f"{prefix}gw:",
        "TOLLGATE_GATEWAY_INTERNAL_TOKEN": uuid.uuid4().hex,
        "TOLLGATE_GATEWAY_KEYS_URL": f"http://127.0.0.1:{free_port()}",
        "TOLLGATE_GATEWAY_CATALOGUE_PATH": str(catalogue),
        "TOLLGATE_GATEWAY_SPOOL_DIR": str(work / "spool"),
        "TOLLGATE_GATEWAY_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    }
    processes = [
        serve("deploy.demo_upstream:create_app", upstream_port, env, work / "upstream.log"),
        serve("services.gateway.main:create_app", gateway_port, env, work / "gateway.log"),
    ]
    try:
        await wait_ready(f"http://127.0.0.1:{upstream_port}/healthz")
        await wait_ready(f"http://127.0.0.1:{gateway_port}/readyz")
        secret = await publish_key(endpoints.kafka_bootstrap, prefix)
        headers = {"Authorization": f"Bearer {secret}"}
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        await wait_ready(through.replace("/v1/chat/completions", "/readyz"))
        print(f"gateway overhead, {args.requests} chat completions per run, {os.cpu_count()} CPUs")
        print(
            f"{'clients':>7} {'direct p50/p99 ms':>18} {'gateway p50/p99 ms':>19} "
            f"{'added p50/p99 ms':>17} {'rps direct':>10} {'rps gw':>7} {'ratio':>6} "
            f"{'self p50/p99 ms':>16}"
        )
        for clients in (int(x) for x in args.levels.split(",")):
            d_lat, _, d_time = await load(direct, {}, clients, args.requests)
            g_lat, g_over, g_time = await load(through, headers, clients, args.requests)
            d50, d99 = pct(d_lat, 0.5) * 1000, pct(d_lat, 0.99) * 1000
            g50, g99 = pct(g_lat, 0.5) * 1000, pct(g_lat, 0.99) * 1000
            d_rps, g_rps = args.requests / d_time, args.requests / g_time
            print(
                f"{clients:>7} {d50:>8.2f}/{d99:<9.2f} {g50:>9.2f}/{g99:<9.2f} "
                f"{g50 - d50:>8.2f}/{g99 - d99:<8.2f} {d_rps:>10.0f} {g_rps:>7.0f} "
                f"{g_rps / d_rps:>6.2f} {statistics.median(g_over):>7.3f}/{pct(g_over, 0.99):<8.3f}"
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


if __name__ == "__main__":
    asyncio.run(main())
