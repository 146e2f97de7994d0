"""An operator's own model catalogue, on each platform, for every service that reads it:
``TOLLGATE_CATALOGUE=<path> make up`` (a file missing or not a catalogue stops it before
anything starts, in one line), docker-compose.yml's one read-only mount, and deploy/k8s's one
ConfigMap that an operator's overlay replaces (``behavior: replace``)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import services, system
from deploy.compose import Compose
from deploy.endpoints import Endpoints
from deploy.servers import StackError
from tests.deploy.k8s_checks import (
    CATALOGUE_READERS,
    ENTRIES,
    K8S,
    UNCOMMITTED,
    catalogue_volumes,
    check_catalogue,
    container,
    deployment,
    of,
    rendered,
)
from tests.deploy.kustomize import Obj

pytestmark = pytest.mark.unit  # no server: `make test-unit`

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "models.yaml"
ENDPOINTS = Endpoints("127.0.0.1:1", "postgresql://tollgate:pw@127.0.0.1:2/tollgate", "redis://h:3")
OWN = """models:
  - id: acme/own-chat
    kind: chat
    upstream: {base_url: "http://vllm.acme.internal:8000/v1", model: own-chat}
    prices:
      - {effective_from: "2026-01-01T00:00:00Z", input_per_million: "1", output_per_million: "2"}
"""


def _own(folder: Path, text: str = OWN, name: str = "own.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_the_services_that_read_a_catalogue_are_the_ones_given_it() -> None:
    """Service.catalogue is set exactly where the settings have a catalogue_path."""
    for service in system.SERVICES:
        if service.settings is None:
            assert not service.catalogue, service.name
            continue
        module, _, name = service.settings.partition(":")
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert ("catalogue_path" in cls.model_fields) == service.catalogue, service.name
    assert {"gateway", "keys", "billing", "console"} == CATALOGUE_READERS


def test_tollgate_catalogue_reaches_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative TOLLGATE_CATALOGUE, from the current directory, is the CATALOGUE_PATH of
    every process that reads one (each replica too) and of no other, and their settings
    build on it."""
    own = _own(tmp_path / "ops")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLGATE_CATALOGUE", "ops/own.yaml")
    for name in ("TOLLGATE_ADMIN_TOKEN", "TOLLGATE_INTERNAL_TOKEN", "TOLLGATE_STATE_MAC_KEYS"):
        monkeypatch.delenv(name, raising=False)
    assert services.catalogue_from_env() == own
    (tmp_path / "run").mkdir()
    wired = services.wiring(tmp_path / "run", ENDPOINTS)
    assert wired.catalogue == own
    layout = services.layout({"gateway": 3, "metering": 2, "billing": 2})
    readers = set()
    for service in layout:
        env = services.service_env(service, wired)
        variable = service.prefix + "CATALOGUE_PATH"
        if not service.catalogue:
            assert variable not in env, service.name
            continue
        readers.add(service.name)
        assert env[variable] == str(own), service.name
        assert service.settings is not None
        module, _, name = service.settings.partition(":")
        cls = getattr(__import__(module, fromlist=[name]), name)
        settings = system.settings_of(service, wired)
        built = cls.model_validate({k.lower(): v for k, v in settings.items()})
        assert built.catalogue_path == own, service.name
    assert readers == {
        "keys",
        "gateway",
        "gateway-1",
        "gateway-2",
        "billing",
        "billing-1",
        "console",
    }
    monkeypatch.delenv("TOLLGATE_CATALOGUE")
    assert services.catalogue_from_env() == DEMO
    assert services.wiring(tmp_path / "run", ENDPOINTS).catalogue == DEMO


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "no such file"),
        ("dir", "not a file"),
        (
            "models: [a: b: c]\n",
            "is not YAML: expected ',' or ']', but got ':' at line 1, column 14",
        ),
        ("models:\n  - id: x\n", "is not a catalogue: models.0."),
        ("", "is not a catalogue: the file: Input should be a valid dictionary"),
        (OWN.replace("http://vllm", "${ACME_UNSET_HOST}"), "${ACME_UNSET_HOST}, which is not set"),
    ],
    ids=["missing", "a folder", "not YAML", "not a catalogue", "empty", "unset variable"],
)
def test_a_missing_or_bad_catalogue_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, problem: str
) -> None:
    path = tmp_path / "own.yaml"
    if text == "dir":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    monkeypatch.setenv("TOLLGATE_CATALOGUE", str(path))
    with pytest.raises(StackError) as refused:
        services.catalogue_from_env()
    message = str(refused.value)
    assert message.startswith(f"TOLLGATE_CATALOGUE {path}"), message
    assert problem in message
    assert "\n" not in message


def test_the_demo_upstream_variable_is_read_as_the_services_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service is handed TOLLGATE_DEMO_UPSTREAM_URL, so a catalogue may name it with no
    default; the check leaves the environment as it found it."""
    monkeypatch.delenv("TOLLGATE_DEMO_UPSTREAM_URL", raising=False)
    own = _own(
        tmp_path,
        OWN.replace('"http://vllm.acme.internal:8000/v1"', "${TOLLGATE_DEMO_UPSTREAM_URL}"),
    )
    assert services.check_catalogue(own) == own
    assert "TOLLGATE_DEMO_UPSTREAM_URL" not in os.environ


def test_make_up_stops_before_anything_starts(tmp_path: Path) -> None:
    """`python -m deploy.stack up` (what `make up` runs) on a missing file: one line, exit 1,
    nothing started in the run folder."""
    run = tmp_path / "run"
    env = {**os.environ, "TOLLGATE_RUN_DIR": str(run), "TOLLGATE_CATALOGUE": "nowhere/own.yaml"}
    done = subprocess.run(
        [sys.executable, "-m", "deploy.stack", "up"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    wanted = f"error: TOLLGATE_CATALOGUE {tmp_path / 'nowhere' / 'own.yaml'}: no such file\n"
    assert (done.stdout, done.stderr) == ("", wanted)
    assert not run.exists() or not list(run.rglob("*.pid"))


def test_services_running_on_another_catalogue_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running service keeps the catalogue path it was started with: while they run on one
    file, `up` asking for another is refused; `status` names the one they run on."""
    run = tmp_path / "run"
    folder = run / "services"
    folder.mkdir(parents=True)
    own = _own(tmp_path)
    (folder / "catalogue").write_text(f"{own}\n")
    assert services.catalogue_in_use(run) is None  # nothing runs
    (folder / "gateway.pid").write_text(str(os.getpid()))  # a process that runs: this one
    assert services.catalogue_in_use(run) == own
    services.refuse_other_catalogue(run, own)
    with pytest.raises(StackError, match=r"run on the catalogue .*own.yaml, not .*models.yaml"):
        services.refuse_other_catalogue(run, DEMO)
    monkeypatch.setattr(services, "stop_pid", lambda *_, **__: None)
    services.down(run)
    assert services.catalogue_in_use(run) is None


# docker-compose.yml

MOUNT = "/etc/tollgate/catalogue/models.yaml"
SOURCE = "${TOLLGATE_CATALOGUE:-./deploy/models.yaml}"


def _compose_services() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return dict(loaded["services"])


def test_compose_mounts_one_catalogue_for_every_reader() -> None:
    """Each reader binds TOLLGATE_CATALOGUE (default deploy/models.yaml) read-only at one path
    and its CATALOGUE_PATH is that path; no other service is given one."""
    for name, spec in _compose_services().items():
        paths = {
            k: v for k, v in spec.get("environment", {}).items() if k.endswith("CATALOGUE_PATH")
        }
        binds = [v for v in spec.get("volumes", []) if isinstance(v, dict) and v["target"] == MOUNT]
        if name not in CATALOGUE_READERS:
            assert (paths, binds) == ({}, []), name
            continue
        assert paths == {f"TOLLGATE_{name.upper()}_CATALOGUE_PATH": MOUNT}, name
        assert binds == [{"type": "bind", "source": SOURCE, "target": MOUNT, "read_only": True}]
    assert (
        REPO / SOURCE.removeprefix("${TOLLGATE_CATALOGUE:-").removesuffix("}")
    ).resolve() == DEMO


def test_compose_up_hands_compose_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-compose reads a relative path from the project's folder: `make compose-up`
    hands it one from the current directory."""
    own = _own(tmp_path / "ops")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere.sock")
    monkeypatch.setenv("TOLLGATE_CATALOGUE", "ops/own.yaml")
    assert Compose(run_dir=tmp_path / "run").env()["TOLLGATE_CATALOGUE"] == str(own)
    monkeypatch.delenv("TOLLGATE_CATALOGUE")
    assert "TOLLGATE_CATALOGUE" not in Compose(run_dir=tmp_path / "run").env()


# deploy/k8s


def _other_configmap(o: list[Obj]) -> None:
    volumes = deployment(o, "billing")["spec"]["template"]["spec"]["volumes"]
    next(v for v in volumes if v["name"] == "catalogue")["configMap"]["name"] = "old-catalogue"


def _none_for_the_console(o: list[Obj]) -> None:
    env = container(o, "console")["env"]
    env[:] = [e for e in env if not e["name"].endswith("_CATALOGUE_PATH")]


def _not_mounted(o: list[Obj]) -> None:
    mounts = container(o, "keys")["volumeMounts"]
    mounts[:] = [m for m in mounts if m["name"] != "catalogue"]


def _metering_given_one(o: list[Obj]) -> None:
    path = {"name": "TOLLGATE_METERING_CATALOGUE_PATH", "value": MOUNT}
    container(o, "metering")["env"].append(path)


@pytest.mark.parametrize(
    "breakage",
    [_other_configmap, _none_for_the_console, _not_mounted, _metering_given_one],
    ids=lambda f: f.__name__,
)
def test_the_catalogue_check_finds_its_breakage(breakage: Any) -> None:
    objects = copy.deepcopy(rendered(K8S))
    assert check_catalogue(objects) == []
    breakage(objects)
    assert check_catalogue(objects) != []


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_every_reader_mounts_the_one_catalogue_configmap(entry: Path) -> None:
    objects = rendered(entry)
    assert catalogue_volumes(objects) == dict.fromkeys(CATALOGUE_READERS, "tollgate-catalogue")
    assert of(objects, "ConfigMap")["tollgate-catalogue"]["data"] == {
        "models.yaml": DEMO.read_text()
    }


def _as_kubectl_sees_it(tmp_path: Path) -> Path:
    """A copy of deploy/k8s with every uncommitted file made from its example."""
    copied = tmp_path / "k8s"
    ignored = shutil.ignore_patterns(*set().union(*UNCOMMITTED.values()))
    shutil.copytree(K8S, copied, ignore=ignored)
    for folder, names in UNCOMMITTED.items():
        for name in names:
            target = copied / folder.relative_to(K8S) / name
            shutil.copy(target.with_name(name + ".example"), target)
    return copied


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) not here")
@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_an_operators_overlay_replaces_the_catalogue_for_every_reader(
    tmp_path: Path, entry: Path
) -> None:
    """docs/kubernetes.md's overlay, rendered by kubectl kustomize: one catalogue ConfigMap,
    the operator's file, mounted by every reader."""
    copied = _as_kubectl_sees_it(tmp_path)
    base = os.path.relpath(copied / entry.relative_to(K8S), tmp_path / "my-tollgate")
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "configMapGenerator": [
            {"name": "tollgate-catalogue", "behavior": "replace", "files": ["models.yaml"]}
        ],
    }
    folder = tmp_path / "my-tollgate"
    _own(folder, name="models.yaml")
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "catalogue" in o["metadata"]["name"]]
    assert [m["data"] for m in maps] == [{"models.yaml": OWN}]
    assert catalogue_volumes(objects) == dict.fromkeys(
        CATALOGUE_READERS, maps[0]["metadata"]["name"]
    )
    assert check_catalogue(objects) == []
