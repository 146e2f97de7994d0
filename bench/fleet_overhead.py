"""What a fleet costs on the hot path: one gateway routing a model to one endpoint against one
routing it to three, measured in the same run against the same direct baseline.

Starts a raw-ASGI upstream (bench/lib/raw_upstream.py) and two gateways run as ``make up``
runs them, on the local stack's Kafka and Redis: ``one`` whose catalogue gives each model one
``base_url``, ``three`` whose catalogue lists three ``endpoints`` (power of two choices on
requests in flight). By default the three endpoints are three paths of the same upstream
(``/replica-<n>/v1``), so that both gateways face the same server and the difference is the
gateway's own; ``--servers`` makes them three upstream processes instead (on this machine's two
cores, more processes on one side). The load comes from this process (aiohttp on uvloop). For each
level of clients and each mode, rounds alternate direct (the first upstream), one, three, ...
so that a change in the machine's load hits all alike; CPU time of each gateway is read from
/proc around its rounds. Figures, not assertions.

    uv run --frozen python bench/fleet_overhead.py [--levels 1,50] [--modes chat,stream]
        [--rounds 3] [--requests 1=400,50=3000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.gateway_overhead import requests_per_level
from bench.lib import procstat, report, servers
from bench.lib.loadgen import MODES, Load
from deploy.ports import free_port

TARGETS = ("direct", "one", "three")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--levels", default="1,50", help="concurrent clients, comma-separated")
    parser.add_argument("--modes", default="chat,stream", help="chat, stream, embed")
    parser.add_argument("--rounds", type=int, default=3, help="direct/one/three per level")
    parser.add_argument("--requests", default="1=400,50=3000", help="per round")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--servers", action="store_true", help="three upstream processes, not three paths of one"
    )
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    args.requests = requests_per_level(args.requests)
    return args


def fleet_catalogue(work: Path, urls: list[str]) -> Path:
    """The demo catalogue with each model's one base_url replaced by the three endpoints."""
    lines = []
    for line in (servers.REPO / "deploy" / "models.yaml").read_text().splitlines():
        if line.strip().startswith("base_url:"):
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(f"{indent}endpoints:")
            lines += [f"{indent}  - base_url: {url}/v1" for url in urls]
        else:
            lines.append(line)
    path = work / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_fleet(
    srv: servers.Servers, work: Path, *, processes: bool
) -> tuple[list[Any], Any, str]:
    """The ``three`` gateway (same topics, Redis prefix and key) and its endpoints: two more
    upstreams (``processes``), or two more paths of the first."""
    extra = []
    if processes:
        ports = [free_port() for _ in range(2)]
        extra = [
            servers.spawn(servers.upstream_argv(port), srv.env, work / f"upstream-{port}.log")
            for port in ports
        ]
        urls = [srv.upstream_url, *(f"http://127.0.0.1:{port}" for port in ports)]
    else:
        urls = [srv.upstream_url, *(f"{srv.upstream_url}/replica-{n}" for n in (1, 2))]
    gateway_port = free_port()
    env = {
        **srv.env,
        "TOLLGATE_GATEWAY_CATALOGUE_PATH": str(fleet_catalogue(work, urls)),
        "TOLLGATE_GATEWAY_SPOOL_DIR": str(work / "spool-three"),
    }
    gateway = servers.spawn(servers.gateway_argv(gateway_port), env, work / "gateway-three.log")
    url = f"http://127.0.0.1:{gateway_port}"
    for upstream in urls[1:]:
        await servers.wait_status(upstream + "/healthz")  # /replica-<n>/healthz too
    await servers.wait_status(url + "/readyz")
    await servers.wait_status(url + "/v1/chat/completions", 200, srv.headers, timeout=60)
    return extra, gateway, url


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load1, load5, _load15 = procstat.load_average()
    print(f"fleet overhead on {os.cpu_count()} CPUs; load average {load1:.2f} {load5:.2f}")
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-fleet-"))
    srv = await servers.start(work)
    extra, three, three_url = await start_fleet(srv, work, processes=args.servers)
    pids = {"one": srv.gateway.pid, "three": three.pid}
    urls = {"direct": srv.upstream_url, "one": srv.gateway_url, "three": three_url}
    out: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "endpoints": "three upstream processes" if args.servers else "three paths of one upstream",
        "results": [],
    }
    try:
        for clients in args.levels:
            count = args.requests.get(clients, args.requests.get(0, 1000))
            for mode in args.modes:
                pooled = {target: report.Pooled() for target in TARGETS}
                for _ in range(args.rounds):
                    for target in TARGETS:
                        headers = {} if target == "direct" else srv.headers
                        async with Load(urls[target], mode, clients, headers) as load:
                            await load.warm()
                            pid = pids.get(target)
                            before = procstat.cpu_seconds(pid) if pid else 0.0
                            measured = await load.run(requests=count)
                            after = procstat.cpu_seconds(pid) if pid else 0.0
                        pool = pooled[target]
                        pool.latencies += measured.latencies
                        pool.errors.update(measured.errors)
                        pool.elapsed += measured.elapsed
                        pool.sent += measured.sent
                        pool.cpu["gateway"] = pool.cpu.get("gateway", 0.0) + after - before
                figures = {t: pooled[t].figures() for t in TARGETS}
                result = {
                    "clients": clients,
                    "mode": mode,
                    "one": report.combine(figures["direct"], figures["one"]),
                    "three": report.combine(figures["direct"], figures["three"]),
                }
                out["results"].append(result)
                print(line(result), flush=True)
    finally:
        for process in (three, *extra):
            process.terminate()
        for process in (three, *extra):
            process.wait(timeout=20)
        srv.stop()
        await servers.delete_topics(srv.endpoints.kafka_bootstrap, srv.prefix)
    return out


def line(result: dict[str, Any]) -> str:
    one, three = result["one"], result["three"]
    errors = sum(sum(r[t]["errors"].values()) for r in (one, three) for t in ("direct", "gateway"))
    return (
        f"{result['clients']:>4} clients {result['mode']:<6}"
        f"  added p50 one {one['added_p50_ms']:6.3f} ms three {three['added_p50_ms']:6.3f} ms"
        f"  gateway CPU/req one {one['gateway_cpu_ms']:.3f} ms three {three['gateway_cpu_ms']:.3f}"
        f" ms (x{three['gateway_cpu_ms'] / one['gateway_cpu_ms']:.3f})"
        f"  rps one {one['gateway']['rps']:.0f} three {three['gateway']['rps']:.0f}"
        f"  errors {errors}"
    )


def main() -> None:
    args = parse_args()
    out = uvloop.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
