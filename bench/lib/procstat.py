"""CPU time and memory of a process tree, read from /proc (Linux).

A process's utime+stime in /proc/<pid>/stat already sum all of its threads; children are
found through /proc/<pid>/task/<tid>/children and added, as are the cutime+cstime of
children that already exited and were waited for. Resolution is one clock tick (10 ms).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat_ticks(pid: int) -> int:
    """utime+stime+cutime+cstime of one process, in clock ticks; 0 when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # The command name (field 2) may hold spaces or parentheses: fields start after its ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime + cutime + cstime


def children(pid: int) -> list[int]:
    """The live children of pid (of every one of its threads)."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children(current)
    return pids


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """CPU seconds (user+system) spent so far by pid's process tree, or by pid alone."""
    return sum(_stat_ticks(p) for p in (tree(pid) if descendants else [pid])) * TICK_S


def rss_bytes(pid: int) -> int:
    """Resident memory of pid (VmRSS), 0 when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
