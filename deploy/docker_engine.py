"""A Docker engine for `make compose-up`: the one that answers, or Debian's ``dockerd`` of our own.

An engine already answering (``DOCKER_HOST``, else ``/var/run/docker.sock``) is used as it
is and never stopped. Otherwise ``dockerd`` (Debian's ``docker.io``, 20.10, which
``make bootstrap`` installs) is started with everything in folders of the project's own: its
socket, pidfile, exec-root and log under ``<run folder>/docker/`` and its data-root (images,
build cache, volumes) under ``~/.cache/tollgate/docker`` (``TOLLGATE_DOCKER_DATA_ROOT``), which
outlives a clean clone, so image builds are cached between runs on the same machine.
``compose-down`` stops it only if ``compose-up`` started it (its pidfile is there).

Networking: the engine is started with ``--iptables=false --ip-forward=false --ip-masq=false
--bridge=none``. Its iptables setup does work on these machines, but it rewrites the host's
global firewall (FORWARD policy DROP, NAT masquerading for 172.17.0.0/16), which every other
process on a shared machine sees and which outlives the engine, and masquerading would let a
container reach addresses off the machine. Without it the engine touches no firewall rule
and turns no forwarding on: containers reach each other on the network the compose run
creates (one bridge, plain layer 2), and nothing else; published ports go through Docker's
userland proxy, which binds 127.0.0.1 on the host and connects to the container. There is
no default bridge, so image builds that install packages run with ``--network host``: they
reach the package registries exactly as the host does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy.process import is_running, read_pid, spawn_detached, stop_pid, tail
from deploy.servers import StackError

DATA_ROOT = Path(
    os.environ.get("TOLLGATE_DOCKER_DATA_ROOT", Path.home() / ".cache" / "tollgate" / "docker")
)
SYSTEM_SOCKET = Path("/var/run/docker.sock")
# The API version both Debian's client and dockerd 20.10 speak; a newer client (the docker
# CLI 28 some images ship) negotiates down to it, docker-compose 1.29 asks for it.
API_VERSION = "1.41"


def docker_cli() -> str:
    """Debian's docker client (the engine's own version) if installed, else any on PATH."""
    debian = Path("/usr/bin/docker")
    if debian.exists():
        return str(debian)
    found = shutil.which("docker")
    if found is None:
        raise StackError("no docker client: run `make bootstrap`")
    return found


class Engine:
    """The engine Tollgate's compose commands talk to."""

    def __init__(self, run_dir: Path, data_root: Path = DATA_ROOT) -> None:
        self.home = run_dir.resolve() / "docker"
        self.data_root = data_root
        self.socket = self.home / "docker.sock"
        self.pid_file = self.home / "dockerd.pid"
        self.log = self.home / "dockerd.log"

    def host(self) -> str:
        """DOCKER_HOST for the clients: an engine that answers, ours if it runs."""
        given = os.environ.get("DOCKER_HOST")
        if given:
            return given
        if self.ours_running() or not _answers(f"unix://{SYSTEM_SOCKET}"):
            return f"unix://{self.socket}"
        return f"unix://{SYSTEM_SOCKET}"

    def env(self) -> dict[str, str]:
        """The environment for docker and docker-compose: this engine, its API version."""
        return {
            **os.environ,
            "DOCKER_HOST": self.host(),
            "DOCKER_API_VERSION": os.environ.get("DOCKER_API_VERSION", API_VERSION),
            "COMPOSE_API_VERSION": os.environ.get("COMPOSE_API_VERSION", API_VERSION),
        }

    def answers(self) -> bool:
        return _answers(self.host())

    def ours_running(self) -> bool:
        pid = read_pid(self.pid_file)
        return pid is not None and is_running(pid)

    def ensure(self, deadline_s: float = 60.0) -> bool:
        """Make sure an engine answers; start ours if none does. True when we started one."""
        if _answers(self.host()):
            return False
        if os.environ.get("DOCKER_HOST"):
            raise StackError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
        if shutil.which("dockerd") is None:
            raise StackError("no dockerd: run `make bootstrap` (Debian's docker.io)")
        if len(str(self.socket)) > 100:
            raise StackError(f"{self.socket} is too long for a unix socket: set TOLLGATE_RUN_DIR")
        exec_root = self.home / "exec"
        for folder in (exec_root, self.data_root):
            folder.mkdir(parents=True, exist_ok=True)
        config = self.home / "daemon.json"  # ours, so no /etc/docker/daemon.json applies
        config.write_text(json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "10m"}}))
        self.socket.unlink(missing_ok=True)
        argv = [
            "dockerd",
            f"--config-file={config}",
            f"--data-root={self.data_root}",
            f"--exec-root={exec_root}",
            f"--pidfile={self.pid_file}",
            f"--host=unix://{self.socket}",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--ip6tables=false",
            "--bridge=none",
            "--userland-proxy=true",
            "--log-level=warn",
        ]
        spawn_detached(argv, self.log)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if _answers(f"unix://{self.socket}"):
                return True
            time.sleep(0.3)
        raise StackError(f"dockerd did not answer within {deadline_s:.0f}s:\n{tail(self.log)}")

    def stop(self) -> None:
        """Stop our dockerd (and the containerd it manages), if it runs."""
        pid = read_pid(self.pid_file)
        if pid is None:
            return
        stop_pid(self.pid_file, signal.SIGTERM, timeout=30.0)
        self.socket.unlink(missing_ok=True)
        # dockerd leaves its bind mount of the host's network namespace (exec-root/netns/default)
        # and, after a crash, container mounts: unmount all under our folders, deepest first.
        for mount in sorted(_mounts_under(self.home, self.data_root), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _mounts_under(*roots: Path) -> list[str]:
    prefixes = tuple(f"{root.resolve()}/" for root in roots)
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [p for p in points if p.startswith(prefixes)]


def _answers(host: str) -> bool:
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False
    done = subprocess.run(
        [docker_cli(), "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": host, "DOCKER_API_VERSION": API_VERSION},
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return done.returncode == 0 and bool(done.stdout.strip())
