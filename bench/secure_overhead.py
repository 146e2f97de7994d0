"""What TLS and SASL to Kafka and Redis cost the gateway's hot path: a plain and a secured
gateway measured in the same run, rounds interleaved.

Starts two gateways as ``make up`` runs one, each with its raw-ASGI upstream: one on the local
stack's plaintext Kafka and Redis, one on the secured engines (deploy/secure.py: SASL_SSL with
SCRAM to Kafka, TLS and an ACL user to Redis). Rounds alternate direct, plain, secured, and
(unless ``--no-policy``) the policy key on each, whose rate limits and budget cost one Redis
script call per request: where TLS to Redis shows. Reports each gateway's CPU per request
(from /proc) and its added p50 over direct, and the secured-to-plain ratios. Figures, not
assertions: every process shares this machine's cores.

    uv run --frozen python bench/secure_overhead.py [--clients 50] [--mode chat]
        [--rounds 3] [--requests 3000] [--no-policy]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvloop

from bench.gateway_overhead import one_round
from bench.lib import servers
from bench.lib.loadgen import MODES
from bench.lib.stats import percentile


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--mode", default="chat", choices=MODES)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=3000, help="per round and arm")
    parser.add_argument("--policy", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    plain = await servers.start(Path(tempfile.mkdtemp(prefix="tollgate-bench-plain-")))
    try:
        secure = await servers.start(
            Path(tempfile.mkdtemp(prefix="tollgate-bench-secure-")), secure=True
        )
    except BaseException:
        plain.stop()  # started: never left behind
        raise
    arms = [("direct", plain, "direct"), ("plain", plain, "gateway"), ("secure", secure, "gateway")]
    if args.policy:
        arms += [("plain+policy", plain, "policy"), ("secure+policy", secure, "policy")]
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in arms}
    cpu: dict[str, float] = dict.fromkeys(latencies, 0.0)
    done: dict[str, int] = dict.fromkeys(latencies, 0)
    try:
        for index in range(args.rounds):
            for name, srv, target in arms:
                measured, spent, _ = await one_round(
                    srv,
                    target,
                    mode=args.mode,
                    clients=args.clients,
                    count=args.requests,
                    duration=None,
                )
                latencies[name] += measured.latencies
                cpu[name] += spent["gateway"]
                done[name] += len(measured.latencies)
                errors = sum(measured.errors.values())
                print(f"round {index + 1} {name:14} {len(measured.latencies)} ok {errors} errors")
    finally:
        plain.stop()
        secure.stop()
        await servers.delete_topics(plain.endpoints.kafka_bootstrap, plain.prefix)
    direct_p50 = percentile(latencies["direct"], 50) * 1000
    print(f"\n{args.clients} clients, {args.mode}, {args.rounds} rounds of {args.requests}")
    print(f"direct p50 {direct_p50:.3f} ms")
    figures: dict[str, tuple[float, float]] = {}
    for name, seen in latencies.items():
        if name == "direct":
            continue
        per_request = cpu[name] / max(done[name], 1) * 1000
        added = percentile(seen, 50) * 1000 - direct_p50
        figures[name] = (per_request, added)
        print(f"{name:14} gateway CPU {per_request:.3f} ms/request, added p50 {added:.3f} ms")
    for base, secured in (("plain", "secure"), ("plain+policy", "secure+policy")):
        if base in figures and secured in figures:
            cpu_ratio = figures[secured][0] / figures[base][0]
            p50_ratio = figures[secured][1] / figures[base][1] if figures[base][1] else float("nan")
            print(
                f"{secured} / {base}: CPU per request x{cpu_ratio:.3f}, added p50 x{p50_ratio:.3f}"
            )


if __name__ == "__main__":
    uvloop.run(run(parse_args()))
