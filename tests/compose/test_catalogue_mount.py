"""docker-compose resolves the catalogue's mount (an operator's own file, read-only, for every
service that reads it): run by `make compose-test`, where docker-compose is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_checks import CATALOGUE_READERS

pytestmark = pytest.mark.compose

REPO = Path(__file__).resolve().parents[2]
MOUNT = "/etc/tollgate/catalogue/models.yaml"


def _own(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "own.yaml"
    path.write_text((REPO / "deploy" / "models.yaml").read_text())
    return path


def test_docker_compose_resolves_the_mount(tmp_path: Path) -> None:
    own = _own(tmp_path)
    secrets = {"TOLLGATE_ADMIN_TOKEN", "TOLLGATE_INTERNAL_TOKEN", "TOLLGATE_STATE_MAC_KEYS"}
    env = {**os.environ, **dict.fromkeys(secrets, "x"), "POSTGRES_PASSWORD": "x"}
    config = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
        env={**env, "TOLLGATE_CATALOGUE": str(own)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    resolved = yaml.safe_load(config)["services"]
    for name in CATALOGUE_READERS:
        (bind,) = [v for v in map(_volume, resolved[name]["volumes"]) if v["target"] == MOUNT]
        assert (bind["source"], bind["read_only"]) == (str(own), True), name


def _volume(volume: str | dict[str, Any]) -> dict[str, Any]:
    """A volume as docker-compose's config prints it: the long form (compose v2), or
    ``source:target[:mode]`` (docker-compose 1.x, Debian's)."""
    if isinstance(volume, dict):
        return {**volume, "read_only": bool(volume.get("read_only"))}
    source, target, *mode = volume.split(":")
    return {"source": source, "target": target, "read_only": "ro" in ",".join(mode).split(",")}
