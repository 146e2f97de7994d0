"""Figures of the gateway benchmark: rounds pooled per (clients, mode, target), and the table."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.lib.stats import summary_ms


@dataclass
class Pooled:
    """All rounds of one target at one level and mode."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    sent: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process
    rps: list[float] = field(default_factory=list)  # per round

    def figures(self) -> dict[str, Any]:
        ok = len(self.latencies)
        per_request = {name: 1000 * s / max(self.sent, 1) for name, s in self.cpu.items()}
        return {
            "requests": self.sent,
            "ok": ok,
            "latency_ms": summary_ms(self.latencies),
            "rps": ok / self.elapsed if self.elapsed else math.nan,
            "rps_per_round": self.rps,
            "cpu_ms_per_request": per_request,
            "errors": dict(self.errors),
        }


def combine(direct: dict[str, Any], gateway: dict[str, Any]) -> dict[str, Any]:
    """The gateway's cost against the direct figures of the same level and mode."""
    d, g = direct["latency_ms"], gateway["latency_ms"]
    return {
        "direct": direct,
        "gateway": gateway,
        "added_p50_ms": g["p50"] - d["p50"],
        "added_p99_ms": g["p99"] - d["p99"],
        "rps_ratio": gateway["rps"] / direct["rps"] if direct["rps"] else math.nan,
        "gateway_cpu_ms": gateway["cpu_ms_per_request"].get("gateway", math.nan),
        "upstream_cpu_ms": direct["cpu_ms_per_request"].get("upstream", math.nan),
    }


def _errors(figures: dict[str, Any]) -> str:
    errs = figures["errors"]
    return ",".join(f"{k}:{v}" for k, v in sorted(errs.items())) or "-"


def _mb(value: float | None) -> str:
    return f"{value:>4.0f}MB" if value is not None else f"{'-':>6}"


def table(results: list[dict[str, Any]]) -> str:
    """One line per level and mode: latency, throughput, CPU, memory and errors."""
    head = (
        f"{'clients':>7} {'mode':<6} | {'direct p50/p90/p99 ms':>22} | "
        f"{'gateway p50/p90/p99 ms':>23} | {'added p50/p99':>14} | {'rps direct':>10} "
        f"{'rps gw':>7} {'ratio':>5} | {'cpu ms/req gw':>13} {'up':>5} {'up*':>5} "
        f"{'lg':>5} {'lg*':>5} | {'gw RSS':>6} | errors direct / gateway"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        d, g = r["direct"], r["gateway"]
        dl, gl = d["latency_ms"], g["latency_ms"]
        dc, gc = d["cpu_ms_per_request"], g["cpu_ms_per_request"]
        lines.append(
            f"{r['clients']:>7} {r['mode']:<6} | "
            f"{dl['p50']:>6.2f}/{dl['p90']:>6.2f}/{dl['p99']:>8.2f} | "
            f"{gl['p50']:>6.2f}/{gl['p90']:>6.2f}/{gl['p99']:>9.2f} | "
            f"{r['added_p50_ms']:>+6.2f}/{r['added_p99_ms']:>+7.2f} | {d['rps']:>10.0f} "
            f"{g['rps']:>7.0f} {r['rps_ratio']:>5.2f} | {r['gateway_cpu_ms']:>13.3f} "
            f"{dc.get('upstream', math.nan):>5.3f} {gc.get('upstream', math.nan):>5.3f} "
            f"{dc.get('loadgen', math.nan):>5.3f} {gc.get('loadgen', math.nan):>5.3f} | "
            f"{_mb(r.get('gateway_rss_mb'))} | {_errors(d)} / {_errors(g)}"
        )
    lines.append(
        "up = upstream CPU per request direct, up* = through the gateway; lg/lg* = the load "
        "generator's; gw RSS = gateway VmRSS after the level"
    )
    return "\n".join(lines)


def policy_cost(
    gateway: dict[str, Any], policy: dict[str, Any], redis_per_request: float
) -> dict[str, Any]:
    """What checking a key's limits and budget adds: gateway CPU and Redis commands."""
    plain = gateway["cpu_ms_per_request"].get("gateway", math.nan)
    limited = policy["cpu_ms_per_request"].get("gateway", math.nan)
    return {
        "policy": policy,
        "gateway_cpu_ms": limited,
        "added_cpu_ms": limited - plain,
        "added_p50_ms": policy["latency_ms"]["p50"] - gateway["latency_ms"]["p50"],
        "redis_commands_per_request": redis_per_request,
        "errors": dict(policy["errors"]),
    }


def policy_line(clients: int, mode: str, cost: dict[str, Any]) -> str:
    return (
        f"{clients:>7} {mode:<6} | with limits and a budget: gateway {cost['gateway_cpu_ms']:.3f}"
        f" ms CPU/req ({cost['added_cpu_ms']:+.3f}), p50 {cost['added_p50_ms']:+.2f} ms,"
        f" {cost['redis_commands_per_request']:.2f} Redis script calls/req,"
        f" errors {cost['errors'] or '-'}"
    )
