"""What the tests check on a rendered entry of deploy/k8s (tests/deploy/kustomize.py): every
object is valid for a pinned Kubernetes (strict: an unknown field fails), and what it sets
agrees with the code: each container runs the app and port ``make up`` runs, sets only
variables its service reads, takes secrets from a Secret, and ledger consumers stay within
usage.events' partitions. Each check returns its problems, so a test can break the manifests
once per check to show it finds them.

deploy/k8s has two entries on one base (deploy/k8s/base): deploy/k8s itself (the engines as
cluster.env says) and deploy/k8s/secure (TLS and each service's own credentials).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import yaml
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from deploy.system import SERVICES
from shared.topics import TOPICS, USAGE_EVENTS
from tests.deploy.kustomize import Obj, containers, render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
SECURE = K8S / "secure"
ENTRIES = {"plain": K8S, "secure": SECURE}
# What operators write from the .example files beside them; never committed.
UNCOMMITTED = {
    K8S: {"secrets.env", "upstream.env"},
    SECURE: {
        "secrets.env",
        "upstream.env",
        "ca.pem",
        "gateway.env",
        "keys.env",
        "metering.env",
        "billing.env",
    },
}
KUBERNETES = "1.33.0"  # the schemas every object must satisfy
APPS = {"gateway", "keys", "metering", "billing", "console"}
# The console has no /readyz: it depends on nothing of its own, so readiness is liveness.
READY_PATH = {"console": "/healthz"}
USAGE_CONSUMERS = {"keys", "metering", "billing"}  # groups on usage.events
TOPIC_CREATORS = {"gateway", "keys", "metering", "billing"}  # ensure_topics with .replication
REDIS_USERS = {"gateway", "keys"}

Check = Callable[[list[Obj]], list[str]]


def rendered(entry: Path) -> list[Obj]:
    """The entry's objects, its uncommitted files read from their .example files."""
    names = UNCOMMITTED[entry]
    return render(
        entry,
        lambda p: (
            p.with_name(p.name + ".example")
            if p.parent == entry.resolve() and p.name in names
            else p
        ),
    )


def of(objects: list[Obj], kind: str) -> dict[str, Obj]:
    """The objects of a kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def app_of(deployment: Obj) -> str:
    """The service a Deployment runs (its name without ``tollgate-``)."""
    return str(deployment["metadata"]["name"]).removeprefix("tollgate-")


def deployment(objects: list[Obj], app: str) -> Obj:
    return of(objects, "Deployment")[f"tollgate-{app}"]


def container(objects: list[Obj], app: str) -> Any:
    return deployment(objects, app)["spec"]["template"]["spec"]["containers"][0]


def settings_class(app: str) -> type[BaseSettings]:
    """The service's settings class (the one reading ``TOLLGATE_<APP>_``)."""
    prefix = f"TOLLGATE_{app.upper()}_"
    module = importlib.import_module(f"services.{app}.settings")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, BaseSettings) and cls.model_config.get("env_prefix") == prefix:
            return cls
    raise AssertionError(f"no settings class with env_prefix {prefix}")


def is_secret(field: FieldInfo) -> bool:
    """A ``SecretStr`` setting, optional or not."""
    return SecretStr in (field.annotation, *get_args(field.annotation))


def resolved_env(
    objects: list[Obj], container: Obj, secret: Callable[[str, str], str]
) -> dict[str, str]:
    """A container's variables as the kubelet sets them: a ConfigMap's value as rendered, a
    Secret's from secret(name, key) (the rendered ones are the empty .example values)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    out = {}
    for e in container.get("env", []):
        source = e.get("valueFrom", {})
        if "secretKeyRef" in source:
            out[e["name"]] = secret(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            out[e["name"]] = maps[ref["name"]][ref["key"]]
        else:
            out[e["name"]] = e["value"]
    return out


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
    deployments, services = of(objects, "Deployment"), of(objects, "Service")
    pdbs, hpas = of(objects, "PodDisruptionBudget"), of(objects, "HorizontalPodAutoscaler")
    if {app_of(d) for d in deployments.values()} != APPS:
        problems.append(f"deployments {sorted(deployments)}, expected one per {sorted(APPS)}")
    for name, d in deployments.items():
        app, pods = app_of(d), d["spec"]["template"]["metadata"].get("labels", {})
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


def entry_images() -> set[str]:
    """The image each entry's kustomization names."""
    out = set()
    for entry in ENTRIES.values():
        spec = yaml.safe_load((entry / "kustomization.yaml").read_text())
        out |= {f"{i['newName']}:{i['newTag']}" for i in spec["images"]}
    return out


def check_commands(objects: list[Obj]) -> list[str]:
    """Each container runs its app as ``make up`` does (uvicorn, --factory, same port),
    listening on all addresses, from the image the kustomizations name."""
    images = entry_images()
    problems = []
    for d in of(objects, "Deployment").values():
        app = app_of(d)
        local = next(s for s in SERVICES if s.name == app)
        # make up listens on loopback; a pod listens on all its addresses.
        want = [a if a != "127.0.0.1" else "0.0.0.0" for a in local.argv[3:]]  # noqa: S104
        for c in containers(d):
            if c.get("command") != ["uvicorn"] or c.get("args") != want:
                problems.append(f"{app}: runs {c.get('command')} {c.get('args')}, not {want}")
            if [p["containerPort"] for p in c.get("ports", [])] != [local.port]:
                problems.append(f"{app}: container ports are not [{local.port}]")
            if c["image"] not in images:
                problems.append(f"{app}: image {c['image']} is not the kustomization's")
    return problems


def check_env(objects: list[Obj]) -> list[str]:
    """Every variable is a setting its service reads (or the catalogue's ``${...}``), set one
    way (a value or one reference); secret settings come from a Secret; every reference names
    a generated key; catalogue paths point into the mounted catalogue."""
    catalogue = (BASE / "models.yaml").read_text()
    data = {(o["kind"], o["metadata"]["name"]): o.get("data", {}) for o in objects}
    problems = []
    for d in of(objects, "Deployment").values():
        app, pod = app_of(d), d["spec"]["template"]["spec"]
        prefix, cls = f"TOLLGATE_{app.upper()}_", settings_class(app)
        fields = {prefix + f.upper(): info for f, info in cls.model_fields.items()}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(d):
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in c.get("volumeMounts", [])}
            for e in c.get("env", []):
                name, source = e["name"], e.get("valueFrom", {})
                if ("value" in e) == bool(source) or len(source) > 1:
                    problems.append(f"{app}: {name} is not set one way: {e}")
                if name.startswith("TOLLGATE_DEMO_") and "${" + name in catalogue:
                    pass
                elif name not in fields:
                    problems.append(f"{app}: {name} is read by nothing")
                elif is_secret(fields[name]) and "secretKeyRef" not in source:
                    problems.append(f"{app}: {name} is a secret: take it from a Secret")
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
        f"{app_of(d)}: {d['spec'].get('replicas', 1)} replicas > {partitions} partitions"
        for d in of(objects, "Deployment").values()
        if app_of(d) in USAGE_CONSUMERS and d["spec"].get("replicas", 1) > partitions
    ]


# The services that read the model catalogue (deploy/system.py's Service.catalogue).
CATALOGUE_READERS = {s.name for s in SERVICES if s.catalogue} & APPS


def catalogue_volumes(objects: list[Obj]) -> dict[str, str | None]:
    """The ConfigMap each Deployment reads the catalogue from (None: a path to no
    ConfigMap), by app; a Deployment that sets no catalogue path is not listed."""
    out: dict[str, str | None] = {}
    for d in of(objects, "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(d):
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in c.get("volumeMounts", [])}
            for e in c.get("env", []):
                if e["name"].endswith("_CATALOGUE_PATH"):
                    folder = str(Path(e.get("value", "")).parent)
                    out[app_of(d)] = mounts.get(folder, {}).get("configMap", {}).get("name")
    return out


def check_catalogue(objects: list[Obj]) -> list[str]:
    """Every service that reads the catalogue is given a path in a mounted ConfigMap, and all
    mount the same one (an operator's overlay replaces it once for all); no other sets one."""
    found = catalogue_volumes(objects)
    problems = [
        f"{app}: reads the catalogue and is given none" for app in CATALOGUE_READERS - set(found)
    ]
    problems += [
        f"{app}: given a catalogue it does not read" for app in set(found) - CATALOGUE_READERS
    ]
    problems += [
        f"{app}: its catalogue path is in no mounted ConfigMap"
        for app, name in found.items()
        if name is None
    ]
    if len(set(found.values())) > 1:
        problems.append(f"the services read different catalogues: {found}")
    return problems


CHECKS: list[Check] = [
    check_schemas,
    check_workloads,
    check_commands,
    check_env,
    check_replicas,
    check_catalogue,
]
