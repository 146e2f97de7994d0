"""PID files, liveness and stopping: the stack stops exactly the processes it started."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_pid(pid_file: Path) -> int | None:
    """The PID on the first line of pid_file, or None when there is no readable one."""
    try:
        first = pid_file.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def is_running(pid: int) -> bool:
    """True while pid names a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop_pid(pid_file: Path, sig: signal.Signals, timeout: float) -> None:
    """Send sig to the PID in pid_file, wait up to timeout, then SIGKILL what is left."""
    pid = read_pid(pid_file)
    if pid is None or not is_running(pid):
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(pid):
        time.sleep(0.1)
    if is_running(pid):
        os.kill(pid, signal.SIGKILL)
        while is_running(pid):
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def spawn_detached(
    argv: list[str] | tuple[str, ...],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv in a session of its own, output appended to log, and return its PID.

    A short-lived shell starts it in the background and exits, so the process is not our
    child: it outlives the command that started it and is reaped by init when it ends.
    """
    launcher = 'exec 0</dev/null; "$@" >>"$TOLLGATE_LOG" 2>&1 & echo $!'
    done = subprocess.run(
        ["setsid", "sh", "-c", launcher, "sh", *argv],
        env={**(env if env is not None else os.environ), "TOLLGATE_LOG": str(log)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is pid (read from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(stat.parent.name))
    return out


def kill_tree(pid: int, timeout: float = 15.0) -> None:
    """SIGKILL pid and every process under it, as a crash would end them (no shutdown runs),
    and wait until all are gone. The parent is stopped first, so it forks no new child while
    its children are collected (PostgreSQL's backends would outlive their postmaster and keep
    its shared memory, and so block the restart)."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    family, queue = [pid], [pid]
    while queue:
        found = children_of(queue.pop())
        family += found
        queue += found
    for member in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(is_running(member) for member in family):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {family} outlived SIGKILL for {timeout:.0f}s")
        time.sleep(0.05)


def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run the coroutine to its end, also when called from inside a running event loop (a
    test or a service that checks the stack): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
