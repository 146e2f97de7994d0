"""deploy/k8s renders (tests/deploy/kustomize.py), every object is valid for a pinned Kubernetes
(strict: an unknown field fails), and what it sets agrees with the code: each container runs
the app and port ``make up`` runs, sets only variables its service reads, takes secrets from
the Secret, and ledger consumers stay within usage.events' partitions. Each check returns its
problems, and a test breaks the manifests once per check to show it finds them."""

from __future__ import annotations

import base64
import copy
import importlib
import inspect
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from deploy.system import SERVICES
from shared.settings import require_real_secret
from shared.topics import TOPICS, USAGE_EVENTS
from tests.deploy.kustomize import Obj, containers, image_name, read_env_file, render

pytestmark = pytest.mark.unit  # no server: `make test-unit`

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s"
KUBERNETES = "1.33.0"  # the schemas every object must satisfy
UNCOMMITTED = {"secrets.env", "upstream.env"}  # operators write these from the .example files
APPS = {"gateway", "keys", "metering", "billing", "console"}
# The console has no /readyz: it depends on nothing of its own, so readiness is liveness.
READY_PATH = {"console": "/healthz"}
USAGE_CONSUMERS = {"keys", "metering", "billing"}  # groups on usage.events
TOPIC_CREATORS = {"gateway", "keys", "metering", "billing"}  # ensure_topics with .replication
REDIS_USERS = {"gateway", "keys"}


def _rendered() -> list[Obj]:
    return render(BASE, lambda p: p.with_name(p.name + ".example") if p.name in UNCOMMITTED else p)


def _of(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _app(deployment: Obj) -> str:
    return str(deployment["metadata"]["name"]).removeprefix("tollgate-")


def _settings_class(app: str) -> type[BaseSettings]:
    prefix = f"TOLLGATE_{app.upper()}_"
    module = importlib.import_module(f"services.{app}.settings")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, BaseSettings) and cls.model_config.get("env_prefix") == prefix:
            return cls
    raise AssertionError(f"no settings class with env_prefix {prefix}")


def _env_names(container: Obj) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def check_schemas(objects: list[Obj]) -> list[str]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {e.message}")
    return problems


def check_workloads(objects: list[Obj]) -> list[str]:
    """A Deployment per app with probes, requests and limits; a Service and a PDB that select
    its pods; the gateway's HPA owns its replica count."""
    problems = []
    deployments, services = _of(objects, "Deployment"), _of(objects, "Service")
    pdbs, hpas = _of(objects, "PodDisruptionBudget"), _of(objects, "HorizontalPodAutoscaler")
    if {_app(d) for d in deployments.values()} != APPS:
        problems.append(f"deployments {sorted(deployments)}, expected one per {sorted(APPS)}")
    for name, d in deployments.items():
        app, pods = _app(d), d["spec"]["template"]["metadata"].get("labels", {})
        for c in containers(d):
            ports = {p.get("name") for p in c.get("ports", [])}
            want = {"livenessProbe": "/healthz", "readinessProbe": READY_PATH.get(app, "/readyz")}
            for probe, path in want.items():
                got = c.get(probe, {}).get("httpGet", {})
                if got.get("path") != path or got.get("port") not in ports:
                    problems.append(f"{name}: {probe} {got} is not {path} on a container port")
            for bound in ("requests", "limits"):
                given = c.get("resources", {}).get(bound, {})
                if not {"cpu", "memory"} <= set(given):
                    problems.append(f"{name}: resources.{bound} needs cpu and memory: {given}")
        service = services.get(name, {}).get("spec", {})
        if not service or not service["selector"].items() <= pods.items():
            problems.append(f"{name}: no ClusterIP Service selecting its pods")
        elif service.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: Service type {service['type']}")
        pdb = pdbs.get(name, {}).get("spec", {}).get("selector", {}).get("matchLabels")
        if not pdb or not pdb.items() <= pods.items():
            problems.append(f"{name}: no PodDisruptionBudget selecting its pods")
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas.values()}
    gateway = targets.get("tollgate-gateway", {}).get("spec", {})
    if [m["resource"]["name"] for m in gateway.get("metrics", [])] != ["cpu"]:
        problems.append("the gateway needs a HorizontalPodAutoscaler on CPU")
    if "replicas" in deployments.get("tollgate-gateway", {}).get("spec", {}):
        problems.append("the gateway's replicas belong to its HPA: an apply would reset them")
    return problems


def check_commands(objects: list[Obj]) -> list[str]:
    """Each container runs its app as ``make up`` does (uvicorn, --factory, same port),
    listening on all addresses, from the image the kustomization names."""
    spec = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in spec["images"]}
    problems = []
    for d in _of(objects, "Deployment").values():
        app = _app(d)
        local = next(s for s in SERVICES if s.name == app)
        # make up listens on loopback; a pod listens on all its addresses.
        want = [a if a != "127.0.0.1" else "0.0.0.0" for a in local.argv[3:]]  # noqa: S104
        for c in containers(d):
            if c.get("command") != ["uvicorn"] or c.get("args") != want:
                problems.append(f"{app}: runs {c.get('command')} {c.get('args')}, not {want}")
            if [p["containerPort"] for p in c.get("ports", [])] != [local.port]:
                problems.append(f"{app}: container ports are not [{local.port}]")
            if c["image"] not in images.values():
                problems.append(f"{app}: image {c['image']} is not the kustomization's")
    return problems


def check_env(objects: list[Obj]) -> list[str]:
    """Every variable is a setting its service reads (or the catalogue's ``${...}``); secret
    settings come from the Secret; every reference names a generated key; catalogue paths
    point into the mounted catalogue."""
    catalogue = (BASE / "models.yaml").read_text()
    data = {(o["kind"], o["metadata"]["name"]): o.get("data", {}) for o in objects}
    problems = []
    for d in _of(objects, "Deployment").values():
        app, pod = _app(d), d["spec"]["template"]["spec"]
        prefix, cls = f"TOLLGATE_{app.upper()}_", _settings_class(_app(d))
        fields = {prefix + f.upper(): info for f, info in cls.model_fields.items()}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(d):
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in c.get("volumeMounts", [])}
            for e in c.get("env", []):
                name, source = e["name"], e.get("valueFrom", {})
                if name.startswith("TOLLGATE_DEMO_") and "${" + name in catalogue:
                    pass
                elif name not in fields:
                    problems.append(f"{app}: {name} is read by nothing")
                elif fields[name].annotation is SecretStr and "secretKeyRef" not in source:
                    problems.append(f"{app}: {name} is a secret: take it from the Secret")
                for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if ref in source and source[ref]["key"] not in data.get(
                        (kind, source[ref]["name"]), {}
                    ):
                        problems.append(f"{app}: {name} refers to a missing {kind} key")
                if name.endswith("_CATALOGUE_PATH"):
                    path = Path(e["value"])
                    volume = mounts.get(str(path.parent), {}).get("configMap", {}).get("name")
                    if path.name not in data.get(("ConfigMap", volume), {}):
                        problems.append(f"{app}: {name} {path} is not in a mounted catalogue")
            problems += [
                f"{app}: envFrom names a Secret that is not generated"
                for ref in c.get("envFrom", [])
                if ("Secret", ref.get("secretRef", {}).get("name")) not in data
            ]
    return problems


def check_replicas(objects: list[Obj]) -> list[str]:
    """A usage.events group has no more replicas than the topic has partitions."""
    partitions = next(t.partitions for t in TOPICS if t.name == USAGE_EVENTS)
    return [
        f"{_app(d)}: {d['spec'].get('replicas', 1)} replicas > {partitions} partitions"
        for d in _of(objects, "Deployment").values()
        if _app(d) in USAGE_CONSUMERS and d["spec"].get("replicas", 1) > partitions
    ]


CHECKS = [check_schemas, check_workloads, check_commands, check_env, check_replicas]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_manifests_pass(check: Callable[[list[Obj]], list[str]]) -> None:
    assert check(_rendered()) == []


def _deployment(objects: list[Obj], app: str) -> Obj:
    return _of(objects, "Deployment")[f"tollgate-{app}"]


def _container(objects: list[Obj], app: str) -> Any:
    return _deployment(objects, app)["spec"]["template"]["spec"]["containers"][0]


def _unknown_field(o: list[Obj]) -> None:
    _container(o, "keys")["probe"] = "/x"


def _no_readiness(o: list[Obj]) -> None:
    del _container(o, "billing")["readinessProbe"]


def _no_limits(o: list[Obj]) -> None:
    del _container(o, "gateway")["resources"]["limits"]


def _no_pdb(o: list[Obj]) -> None:
    o.remove(_of(o, "PodDisruptionBudget")["tollgate-keys"])


def _no_hpa(o: list[Obj]) -> None:
    o.remove(_of(o, "HorizontalPodAutoscaler")["tollgate-gateway"])


def _other_port(o: list[Obj]) -> None:
    args = _container(o, "metering")["args"]
    args[args.index("--port") + 1] = "9000"


def _misspelt(o: list[Obj]) -> None:
    _container(o, "gateway")["env"].append({"name": "TOLLGATE_GATEWAY_REDIS_CLUSTR", "value": "1"})


def _plain_secret(o: list[Obj]) -> None:
    env = _container(o, "console")["env"]
    env[:] = [e for e in env if e["name"] != "TOLLGATE_CONSOLE_ADMIN_TOKEN"]
    env.append({"name": "TOLLGATE_CONSOLE_ADMIN_TOKEN", "value": "x" * 32})


def _too_many(o: list[Obj]) -> None:
    _deployment(o, "billing")["spec"]["replicas"] = 7


BREAKAGES = [
    (_unknown_field, check_schemas),
    (_no_readiness, check_workloads),
    (_no_limits, check_workloads),
    (_no_pdb, check_workloads),
    (_no_hpa, check_workloads),
    (_other_port, check_commands),
    (_misspelt, check_env),
    (_plain_secret, check_env),
    (_too_many, check_replicas),
]


@pytest.mark.parametrize(("breakage", "check"), BREAKAGES, ids=lambda f: f.__name__)
def test_each_check_finds_its_breakage(
    breakage: Callable[[list[Obj]], None], check: Callable[[list[Obj]], list[str]]
) -> None:
    objects = copy.deepcopy(_rendered())
    breakage(objects)
    assert check(objects) != []


def test_settings_accept_what_the_manifests_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each service's settings build from its container's environment as resolved, and a
    cluster's settings are on: replication 3, min ISR 2, Redis Cluster."""
    objects = _rendered()
    tokens = {"ADMIN_TOKEN": "a" * 32, "INTERNAL_TOKEN": "i" * 32, "DATABASE_URL": "postgresql://x"}
    tokens["STATE_MAC_KEYS"] = "k1:" + "m" * 32
    data = {o["metadata"]["name"]: o.get("data", {}) for o in objects}
    for d in _of(objects, "Deployment").values():
        app = _app(d)
        for name in [n for n in os.environ if n.startswith("TOLLGATE_")]:
            monkeypatch.delenv(name)
        for e in _container(objects, app)["env"]:
            source = e.get("valueFrom", {})
            if "secretKeyRef" in source:
                value = tokens[source["secretKeyRef"]["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = data[ref["name"]][ref["key"]]
            else:
                value = e["value"]
            monkeypatch.setenv(e["name"], value)
        settings: Any = _settings_class(app)()
        if app in TOPIC_CREATORS:
            assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
        if app in REDIS_USERS:
            assert settings.redis_cluster is True, app


def test_no_secret_is_committed() -> None:
    """The env files the Secrets come from are git-ignored and untracked; their examples name
    the keys with empty values (which the services refuse); no resource is a Secret."""
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/k8s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in UNCOMMITTED:
        path = f"deploy/k8s/{name}"
        assert path not in tracked, path
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
        example = read_env_file(BASE / f"{name}.example")
        assert example, f"{name}.example names no key"
        assert set(example.values()) == {""}, f"{name}.example holds values"
    with pytest.raises(ValueError, match="real secret"):
        require_real_secret(SecretStr(""), "ADMIN_TOKEN")
    spec = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    for resource in spec["resources"]:
        kinds = [d["kind"] for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
        assert "Secret" not in kinds, resource
    secrets = _of(_rendered(), "Secret")
    assert {base64.b64decode(v) for s in secrets.values() for v in s["data"].values()} == {b""}


def test_catalogue_is_the_repos_and_names_its_upstream_keys() -> None:
    """kustomize reads no file outside deploy/k8s, so the catalogue is a copy: it must stay
    deploy/models.yaml; upstream.env.example names every api_key_env of it."""
    copied = (BASE / "models.yaml").read_text()
    assert copied == (REPO / "deploy" / "models.yaml").read_text()
    wanted = {
        m["upstream"]["api_key_env"]
        for m in yaml.safe_load(copied)["models"]
        if m["upstream"].get("api_key_env")
    }
    assert set(read_env_file(BASE / "upstream.env.example")) == wanted


def test_renderer_applies_images_and_labels() -> None:
    """The renderer itself: the images entry and commonLabels reach the pods and selectors."""
    spec = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects = _rendered()
    labels = spec["commonLabels"]
    for obj in objects:
        assert labels.items() <= obj["metadata"]["labels"].items()
    for d in _of(objects, "Deployment").values():
        assert labels.items() <= d["spec"]["selector"]["matchLabels"].items()
        for c in containers(d):
            assert image_name(c["image"]) == spec["images"][0]["newName"]
