"""A py-spy profile of one process during one round, summarised as top-N functions.

``py-spy record --format raw`` writes folded stacks (``root;...;leaf count`` per line); this
module counts, for each function, its own samples (it is the leaf) and its total samples (it
is anywhere on the stack, once per stack however deep the recursion).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SCAFFOLD = 0.9  # frames on nearly as many stacks as the root: runpy, click, uvicorn, asyncio.run


@dataclass(frozen=True)
class Top:
    samples: int
    own: list[tuple[str, int]]
    total: list[tuple[str, int]]  # without the scaffold: frames on >= 90% as many as the root
    scaffold: list[str]
    packages: list[tuple[str, int]]  # own samples per package (httpx, starlette, services/...)


def package(frame: str) -> str:
    """``send (anyio/_backends/_asyncio.py:1459)`` -> ``anyio``; this repo's code keeps two
    levels (``services/gateway``) so the gateway's own share stands out."""
    where = frame[frame.rfind("(") + 1 :].rstrip(")").rpartition(":")[0] or frame
    parts = where.split("/")
    if parts[0] in ("services", "shared", "bench", "deploy") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if len(parts) > 1 or where.endswith(".py") else where


def aggregate(folded: str, n: int = 25) -> Top:
    """Own and total samples per function from folded stacks. A leaf in native code shows as
    its nearest Python caller: ``run (asyncio/runners.py)`` is time inside uvloop's loop."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        packages[package(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count
    most = max(total.values(), default=0)
    scaffold = sorted(name for name, count in total.items() if count >= SCAFFOLD * most)
    for name in scaffold:
        del total[name]
    return Top(samples, own.most_common(n), total.most_common(n), scaffold, packages.most_common(n))


def py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


class Recorder:
    """``py-spy record`` attached to pid from start() until stop()."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        self.argv = [
            py_spy(), "record", "--pid", str(pid), "--format", "raw", "--function",
            "--rate", str(rate), "--output", str(output),
        ]  # fmt: skip
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def stop(self) -> Top:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        return aggregate(self.output.read_text())


def table(top: Top, n: int = 25) -> str:
    """The top-n lists as text, with shares of all samples."""
    lines = [f"{top.samples} samples (total omits {len(top.scaffold)} frames near the root)"]
    for title, rows in (("own", top.own), ("total", top.total), ("package, own", top.packages)):
        lines.append(f"  top {n} by {title} samples:")
        lines += [
            f"    {count:>7} {100 * count / max(top.samples, 1):5.1f}%  {name}"
            for name, count in rows[:n]
        ]
    return "\n".join(lines)
