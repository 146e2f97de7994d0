"""deploy/k8s renders (tests/deploy/kustomize.py), both entries (deploy/k8s and
deploy/k8s/secure) pass every check of tests/deploy/k8s_checks.py, a test breaks the manifests
once per check to show it finds them, and the settings each container gets build its
service's settings. What only the secured entry promises is in test_k8s_secure.py."""

from __future__ import annotations

import base64
import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from shared.settings import require_real_secret
from tests.deploy.k8s_checks import (
    BASE,
    CHECKS,
    ENTRIES,
    K8S,
    REDIS_USERS,
    REPO,
    TOPIC_CREATORS,
    UNCOMMITTED,
    Check,
    app_of,
    check_commands,
    check_env,
    check_replicas,
    check_schemas,
    check_workloads,
    container,
    deployment,
    entry_images,
    of,
    rendered,
    resolved_env,
    settings_class,
)
from tests.deploy.kustomize import Obj, containers, image_name, read_env_file

pytestmark = pytest.mark.unit  # no server: `make test-unit`

TOKENS = {
    "ADMIN_TOKEN": "a" * 32,
    "INTERNAL_TOKEN": "i" * 32,
    "STATE_MAC_KEYS": "k1:" + "m" * 32,
    "DATABASE_URL": "postgresql://x",
}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_the_manifests_pass(entry: Path, check: Check) -> None:
    assert check(rendered(entry)) == []


def _unknown_field(o: list[Obj]) -> None:
    container(o, "keys")["probe"] = "/x"


def _no_readiness(o: list[Obj]) -> None:
    del container(o, "billing")["readinessProbe"]


def _no_limits(o: list[Obj]) -> None:
    del container(o, "gateway")["resources"]["limits"]


def _no_pdb(o: list[Obj]) -> None:
    o.remove(of(o, "PodDisruptionBudget")["tollgate-keys"])


def _no_hpa(o: list[Obj]) -> None:
    o.remove(of(o, "HorizontalPodAutoscaler")["tollgate-gateway"])


def _other_port(o: list[Obj]) -> None:
    args = container(o, "metering")["args"]
    args[args.index("--port") + 1] = "9000"


def _misspelt(o: list[Obj]) -> None:
    container(o, "gateway")["env"].append({"name": "TOLLGATE_GATEWAY_REDIS_CLUSTR", "value": "1"})


def _plain_secret(o: list[Obj]) -> None:
    env = container(o, "console")["env"]
    env[:] = [e for e in env if e["name"] != "TOLLGATE_CONSOLE_ADMIN_TOKEN"]
    env.append({"name": "TOLLGATE_CONSOLE_ADMIN_TOKEN", "value": "x" * 32})


def _plain_optional_secret(o: list[Obj]) -> None:
    env = {"name": "TOLLGATE_GATEWAY_REDIS_PASSWORD", "value": "x" * 32}
    container(o, "gateway")["env"].append(env)


def _two_sources(o: list[Obj]) -> None:
    env = next(e for e in container(o, "keys")["env"] if e["name"] == "TOLLGATE_KEYS_REDIS_URL")
    env["value"] = "redis://elsewhere:6379/0"


def _too_many(o: list[Obj]) -> None:
    deployment(o, "billing")["spec"]["replicas"] = 7


BREAKAGES = [
    (_unknown_field, check_schemas),
    (_no_readiness, check_workloads),
    (_no_limits, check_workloads),
    (_no_pdb, check_workloads),
    (_no_hpa, check_workloads),
    (_other_port, check_commands),
    (_misspelt, check_env),
    (_plain_secret, check_env),
    (_plain_optional_secret, check_env),
    (_two_sources, check_env),
    (_too_many, check_replicas),
]


@pytest.mark.parametrize(("breakage", "check"), BREAKAGES, ids=lambda f: f.__name__)
def test_each_check_finds_its_breakage(breakage: Any, check: Check) -> None:
    objects = copy.deepcopy(rendered(K8S))
    breakage(objects)
    assert check(objects) != []


def test_settings_accept_what_the_manifests_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each service's settings build from its container's environment as resolved, and a
    cluster's settings are on: replication 3, min ISR 2, Redis Cluster."""
    objects = rendered(K8S)
    for d in of(objects, "Deployment").values():
        app = app_of(d)
        for name in [n for n in os.environ if n.startswith("TOLLGATE_")]:
            monkeypatch.delenv(name)
        for name, value in resolved_env(objects, container(objects, app), _token).items():
            monkeypatch.setenv(name, value)
        settings: Any = settings_class(app)()
        if app in TOPIC_CREATORS:
            assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
        if app in REDIS_USERS:
            assert settings.redis_cluster is True, app


def _token(_secret: str, key: str) -> str:
    return TOKENS[key]


def _resources(entry: Path) -> list[Path]:
    """The resource files of a kustomization and of the bases it names."""
    spec = yaml.safe_load((entry / "kustomization.yaml").read_text())
    out: list[Path] = []
    for name in spec.get("resources", []):
        path = entry / name
        out += _resources(path) if path.is_dir() else [path]
    return out


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_no_secret_is_committed(entry: Path) -> None:
    """The files the Secrets (and the CA) come from are git-ignored and untracked; their
    examples name the keys with empty values (which the services refuse), or hold no
    certificate; no resource is a Secret."""
    folder = entry.relative_to(REPO).as_posix()
    tracked = subprocess.run(
        ["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in UNCOMMITTED[entry]:
        path = f"{folder}/{name}"
        assert path not in tracked, path
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
        if not name.endswith(".env"):
            assert "-----BEGIN" not in (entry / f"{name}.example").read_text(), name
            continue
        example = read_env_file(entry / f"{name}.example")
        assert example, f"{name}.example names no key"
        assert set(example.values()) == {""}, f"{name}.example holds values"
    with pytest.raises(ValueError, match="real secret"):
        require_real_secret(SecretStr(""), "ADMIN_TOKEN")
    for resource in _resources(entry):
        kinds = [d["kind"] for d in yaml.safe_load_all(resource.read_text()) if d]
        assert "Secret" not in kinds, resource
    secrets = of(rendered(entry), "Secret")
    assert {base64.b64decode(v) for s in secrets.values() for v in s["data"].values()} == {b""}


def test_catalogue_is_the_repos_and_names_its_upstream_keys() -> None:
    """kustomize reads no file outside a kustomization's folder, so the catalogue is a copy: it
    must stay deploy/models.yaml; each entry's upstream.env.example names every api_key_env."""
    copied = (BASE / "models.yaml").read_text()
    assert copied == (REPO / "deploy" / "models.yaml").read_text()
    wanted = {
        m["upstream"]["api_key_env"]
        for m in yaml.safe_load(copied)["models"]
        if m["upstream"].get("api_key_env")
    }
    for entry in ENTRIES.values():
        assert set(read_env_file(entry / "upstream.env.example")) == wanted, entry


def test_both_entries_name_one_image() -> None:
    """One Tollgate image whichever entry is applied (an operator edits the one they use)."""
    assert len(entry_images()) == 1


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_renderer_applies_images_and_labels(entry: Path) -> None:
    """The renderer itself: the images entry and commonLabels reach the pods and selectors."""
    spec = yaml.safe_load((entry / "kustomization.yaml").read_text())
    objects = rendered(entry)
    labels = spec["commonLabels"]
    for obj in objects:
        assert labels.items() <= obj["metadata"]["labels"].items()
    for d in of(objects, "Deployment").values():
        assert labels.items() <= d["spec"]["selector"]["matchLabels"].items()
        for c in containers(d):
            assert image_name(c["image"]) == spec["images"][0]["newName"]
