"""`make compose-up|compose-down|images`: Tollgate from docker-compose.yml on this machine.

``up`` makes sure a Docker engine answers (``deploy.docker_engine``: Debian's dockerd with
its data in the project's own folders), builds the local images (``deploy.images``; skip
with ``TOLLGATE_COMPOSE_IMAGES=official`` to pull and build the official ones instead), runs
the compose file with docker-compose (Debian's, 1.29), waits until every container is
healthy (``migrate`` exited 0), creates the first key and prints it once, as ``make up``
does. The operator token, internal token, key states' keyring and database password come from
the environment (``TOLLGATE_ADMIN_TOKEN``, ``TOLLGATE_INTERNAL_TOKEN``,
``TOLLGATE_STATE_MAC_KEYS``, ``POSTGRES_PASSWORD``) or are
generated once into the run folder (``.run/compose/``). ``TOLLGATE_CATALOGUE`` names an
operator's own model catalogue (a relative path from the current directory), checked before
anything starts and mounted where docker-compose.yml mounts it for every service that reads
it. ``down`` removes the containers and
the network (``--volumes``: the data too), checks nothing is left, and stops the engine if
``up`` started it and nothing else runs in it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.docker_engine import Engine, docker_cli
from deploy.first_key import ensure_first_key
from deploy.private import write_private
from deploy.process import port_open
from deploy.servers import REPO, StackError
from deploy.services import CATALOGUE_VARIABLE, catalogue_from_env
from shared.state_mac import new_keyring_text

RUN_DIR = Path(os.environ.get("TOLLGATE_RUN_DIR", REPO / ".run"))
PORTS = {"gateway": 8080, "keys": 8081, "metering": 8082, "billing": 8083, "console": 8084}
SECRETS = {
    "TOLLGATE_ADMIN_TOKEN": "admin-token",
    "TOLLGATE_INTERNAL_TOKEN": "internal-token",
    "TOLLGATE_STATE_MAC_KEYS": "state-mac-keys",
    "POSTGRES_PASSWORD": "postgres-password",
}


@dataclass
class Compose:
    """One compose project of Tollgate on one engine."""

    run_dir: Path = RUN_DIR
    project: str = os.environ.get("TOLLGATE_COMPOSE_PROJECT", "tollgate")
    profiles: str = os.environ.get("TOLLGATE_COMPOSE_PROFILES", "demo")
    local_images: bool = os.environ.get("TOLLGATE_COMPOSE_IMAGES", "local") != "official"

    def __post_init__(self) -> None:
        self.engine = Engine(self.run_dir)
        self.home = self.run_dir / "compose" / self.project

    def secret(self, env_var: str) -> str:
        """From the environment, else generated once into the run folder."""
        given = os.environ.get(env_var)
        if given:
            return given
        path = self.home / SECRETS[env_var]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            new = new_keyring_text() if env_var == "TOLLGATE_STATE_MAC_KEYS" else None
            write_private(path, new or secrets.token_urlsafe(32))
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        env = self.engine.env()
        env.update({name: self.secret(name) for name in SECRETS})
        given = os.environ.get(CATALOGUE_VARIABLE, "").strip()
        if given:
            # docker-compose would read it from the project's folder, not from here.
            env[CATALOGUE_VARIABLE] = str(Path(given).expanduser().absolute())
        env["COMPOSE_PROFILES"] = self.profiles
        env["COMPOSE_PROJECT_NAME"] = self.project
        env.setdefault("COMPOSE_HTTP_TIMEOUT", "180")
        return env

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Debian's docker-compose 1.29 by default; TOLLGATE_COMPOSE_CLIENT names another
        # (Compose v2 built from Go modules runs the same files; see docs/compose.md).
        client = shutil.which(os.environ.get("TOLLGATE_COMPOSE_CLIENT", "docker-compose"))
        if client is None:
            raise StackError("no docker-compose: run `make compose-bootstrap`")
        files = ["-f", str(REPO / "docker-compose.yml")]
        if self.local_images:
            files += ["-f", str(REPO / "docker-compose.local.yml")]
        done = subprocess.run(
            [client, "--project-directory", str(REPO), *files, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise StackError(f"docker-compose {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [docker_cli(), *args],
            env=self.engine.env(),
            capture_output=True,
            text=True,
            check=False,
        )

    def containers(self) -> list[dict[str, str]]:
        """This project's containers (any state): name, service, state, health, exit code."""
        ids = self.docker(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout.split()
        if not ids:
            return []
        fmt = (
            '{"name": "{{.Name}}",'
            ' "service": "{{index .Config.Labels "com.docker.compose.service"}}",'
            ' "state": "{{.State.Status}}", "exit": "{{.State.ExitCode}}",'
            ' "health": "{{if .State.Health}}{{.State.Health.Status}}{{end}}"}'
        )
        out = self.docker("inspect", "-f", fmt, *ids).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def networks(self) -> list[str]:
        done = self.docker(
            "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"
        )
        return done.stdout.split()

    def up(self) -> None:
        """Engine, images, containers, health, first key."""
        started = time.monotonic()
        catalogue = catalogue_from_env()  # refused here, before anything starts
        if self.engine.ensure():
            print(f"dockerd      started, data in {self.engine.data_root}, log {self.engine.log}")
        running = {c["service"] for c in self.containers() if c["state"] == "running"}
        taken = [p for name, p in PORTS.items() if name not in running and port_open(p)]
        if taken:
            raise StackError(f"ports {taken} are taken by something else: stop it first")
        if self.local_images:
            from deploy.images import build_all

            build_all(self.engine)
        else:
            self.compose("build")
        self.compose("up", "-d", "--no-build", "--remove-orphans")
        self.wait_healthy()
        print(f"ready in {time.monotonic() - started:.1f}s")
        print(f"catalogue    {catalogue}")
        for name, port in PORTS.items():
            print(f"{name:12} http://127.0.0.1:{port}{'/v1' if name == 'gateway' else ''}")
        print(f"admin token  in {self.home / 'admin-token'} (unless TOLLGATE_ADMIN_TOKEN is set)")
        admin = self.secret("TOLLGATE_ADMIN_TOKEN")
        print(ensure_first_key(self.home, admin, keys_url=f"http://127.0.0.1:{PORTS['keys']}"))

    def wait_healthy(self, deadline_s: float = 300.0) -> None:
        """Until every service is healthy and migrate exited 0; fails on a dead container."""
        deadline = time.monotonic() + deadline_s
        waiting: list[str] = []
        while time.monotonic() < deadline:
            waiting = []
            for c in self.containers():
                if c["service"] == "migrate":
                    if c["state"] == "exited" and c["exit"] != "0":
                        raise StackError(f"migrate failed:\n{self.logs('migrate')}")
                    if c["state"] != "exited":
                        waiting.append("migrate")
                elif c["state"] in ("exited", "dead"):
                    raise StackError(f"{c['service']} stopped:\n{self.logs(c['service'])}")
                elif c["health"] != "healthy":
                    waiting.append(c["service"])
            expected = {"gateway", "keys", "metering", "billing", "console"}
            if not waiting and expected <= {c["service"] for c in self.containers()}:
                return
            time.sleep(1.0)
        logs = "\n".join(self.logs(s) for s in waiting)
        raise StackError(f"not healthy within {deadline_s:.0f}s: {waiting}\n{logs}")

    def logs(self, service: str) -> str:
        done = self.compose("logs", "--no-color", "--tail", "30", service, check=False)
        return done.stdout + done.stderr

    def down(self, volumes: bool = False) -> None:
        """Containers and network gone, ports free; the engine stopped if we started it.
        With volumes, an engine that is not running is started to delete them, then stopped."""
        if volumes and not self.engine.answers():
            self.engine.ensure()
        if self.engine.answers():
            args = ["down", "--remove-orphans", "--timeout", "20"]
            self.compose(*([*args, "--volumes"] if volumes else args))
            left = [c["name"] for c in self.containers()] + self.networks()
            if left:
                raise StackError(f"left behind by docker-compose down: {left}")
            if volumes:
                (self.home / "first-key.json").unlink(missing_ok=True)
            if self.engine.ours_running() and not self.docker("ps", "-aq").stdout.split():
                self.engine.stop()
                print("dockerd      stopped")
        busy = [p for p in PORTS.values() if port_open(p)]
        if busy:
            raise StackError(f"ports still in use after compose down: {busy}")


def main(argv: list[str] | None = None) -> int:
    """Command line: up, down [--volumes], images, ps."""
    parser = argparse.ArgumentParser(prog="python -m deploy.compose", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "images", "ps"])
    parser.add_argument("--volumes", action="store_true", help="down: delete the data too")
    args = parser.parse_args(argv)
    compose = Compose()
    try:
        if args.command == "up":
            compose.up()
        elif args.command == "down":
            compose.down(volumes=args.volumes)
            print("stopped")
        elif args.command == "images":
            from deploy.images import build_all

            started = compose.engine.ensure()
            try:
                build_all(compose.engine)
            finally:
                if started:
                    compose.engine.stop()
        else:
            for c in compose.containers():
                print(f"{c['service']:10} {c['state']:8} {c['health'] or '-':10} {c['name']}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
