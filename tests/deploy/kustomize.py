"""A small kustomize for the tests: the fields deploy/k8s and its overlays use, no more.

kustomize is not installed everywhere these tests run (nor is a Python port of it), so this
renders what the kustomizations use, as kustomize documents it: ``resources`` (files of this
folder, or a folder with a kustomization of its own: a base, rendered whole first),
``configMapGenerator`` and ``secretGenerator`` (``files``, ``envs``, ``literals``),
``patches`` (``path`` to a strategic merge patch of a Deployment), ``images`` and
``commonLabels`` (on every object's labels and on the selectors and pod templates it knows).
Any other field is refused, so a kustomization that grows past this fails the tests instead of
being half rendered. Files outside the folder are refused, as kustomize's default load
restrictor does (a base's folder is not a file: kustomize loads it with its own root, and
refuses one that contains the kustomization that names it).

A strategic merge patch merges maps key by key (``null`` deletes a key) and the lists a
Deployment's pod template merges by key in Kubernetes' schema (containers, volumes and env by
``name``, volume mounts by ``mountPath``); any other list, and any ``$patch`` directive, is
refused rather than guessed.

One difference, on purpose: generated ConfigMaps and Secrets keep their names (kustomize adds
a hash suffix and rewrites the references), so the tests check references by those names.
When kubectl is installed, tests/deploy/test_kustomize.py checks that this renders what
``kubectl kustomize`` does, but for those suffixes.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "patches",
    "images",
    "commonLabels",
}
GENERATOR_FIELDS = {"name", "files", "envs", "literals"}
PATCH_FIELDS = {"path"}
PATCHED_KINDS = {"Deployment"}
# The lists of a Deployment a strategic merge patch merges by a key (Kubernetes' schema:
# x-kubernetes-patch-merge-key), by field name: each name means one list in a Deployment.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
}
# Where commonLabels go besides metadata.labels (kustomize's commonLabels field specs).
SELECTOR_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels")),
    "Service": (("spec", "selector"),),
    "PodDisruptionBudget": (("spec", "selector", "matchLabels"),),
}
GENERATORS = (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator"))


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not, or names a missing file."""


def render(root: Path, source: Callable[[Path], Path] | None = None) -> list[Obj]:
    """Every object ``kubectl apply -k root`` would send; source maps a generator's file to
    the one to read (the tests read ``secrets.env.example`` for the uncommitted file)."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    if unknown := set(spec) - SUPPORTED:
        raise KustomizeError(f"fields this renderer does not support: {sorted(unknown)}")
    objects: list[Obj] = []
    for resource in spec.get("resources", []):
        if (root / resource).is_dir():
            if root.resolve().is_relative_to((root / resource).resolve()):
                raise KustomizeError(f"{resource} contains {root}: kustomize refuses the cycle")
            if not (root / resource / "kustomization.yaml").is_file():
                raise KustomizeError(f"{resource}: a folder without a kustomization.yaml")
            objects += render(root / resource, source)
        else:
            objects += [d for d in yaml.safe_load_all(_inside(root, resource).read_text()) if d]
    for kind, field in GENERATORS:
        for generator in spec.get(field, []):
            _generate(objects, kind, root, generator, source)
    for patch in spec.get("patches", []):
        _patch(objects, root, patch)
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    for obj in objects:
        _add_labels(obj, spec.get("commonLabels", {}))
    return objects


def _inside(root: Path, name: str) -> Path:
    path = (root / name).resolve()  # symlinks followed, as kustomize does
    if not path.is_relative_to(root.resolve()):
        raise KustomizeError(f"{name} is outside {root} (kustomize's load restrictor)")
    return path


def _generate(
    objects: list[Obj],
    kind: str,
    root: Path,
    generator: Obj,
    source: Callable[[Path], Path] | None,
) -> None:
    name = generator["name"]
    if unknown := set(generator) - GENERATOR_FIELDS:
        raise KustomizeError(f"{name}: unsupported fields {sorted(unknown)}")
    if any(o["kind"] == kind and o["metadata"]["name"] == name for o in objects):
        raise KustomizeError(f"{kind} {name} is made twice")
    read = source or (lambda path: path)
    data: dict[str, str] = {}
    for file in generator.get("files", []):
        path = _inside(root, file)
        data[path.name] = read(path).read_text()
    for env in generator.get("envs", []):
        data |= read_env_file(read(_inside(root, env)))
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    objects.append(obj)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments skipped, as kustomize reads them."""
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            # kustomize would take the value from its own environment: never wanted here.
            raise KustomizeError(f"{path}:{number}: no '=' in {stripped!r}")
        out[key] = value
    return out


def _patch(objects: list[Obj], root: Path, patch: Obj) -> None:
    if unknown := set(patch) - PATCH_FIELDS:
        raise KustomizeError(f"patch {patch}: unsupported fields {sorted(unknown)}")
    docs = [d for d in yaml.safe_load_all(_inside(root, patch["path"]).read_text()) if d]
    if len(docs) != 1:
        raise KustomizeError(f"{patch['path']}: one patch a file, not {len(docs)}")
    doc = docs[0]
    kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
    if kind not in PATCHED_KINDS:
        raise KustomizeError(f"{patch['path']}: patches of {kind} are not supported")
    targets = [
        o
        for o in objects
        if (o["apiVersion"], o["kind"], o["metadata"]["name"]) == (doc["apiVersion"], kind, name)
    ]
    if len(targets) != 1:
        raise KustomizeError(f"{patch['path']}: {len(targets)} objects are {kind}/{name}")
    merged = _merge(targets[0], doc, patch["path"])
    targets[0].clear()
    targets[0].update(merged)


def _merge(base: Any, patch: Any, where: str) -> Any:
    """A strategic merge of patch into base (a copy): maps by key, keyed lists by their key."""
    if isinstance(patch, dict):
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise KustomizeError(f"{where}: directive {key} is not supported")
            if value is None:
                out.pop(key, None)
            elif isinstance(value, list):
                out[key] = _merge_list(out.get(key, []), value, key, f"{where}.{key}")
            else:
                out[key] = _merge(out.get(key), value, f"{where}.{key}")
        return out
    return copy.deepcopy(patch)


def _merge_list(base: list[Any], patch: list[Any], field: str, where: str) -> list[Any]:
    """The patch's items first, each merged with the base's of the same key, then the base's
    other items (the order kustomize's merge gives)."""
    if field not in MERGE_KEYS:
        raise KustomizeError(f"{where}: this renderer merges no list {field!r}")
    key = MERGE_KEYS[field]
    olds = {item.get(key): item for item in base}
    keys = [item.get(key) for item in patch]
    merged = [
        _merge(olds.get(k, {}), item, f"{where}[{k}]") for k, item in zip(keys, patch, strict=True)
    ]
    return merged + [copy.deepcopy(item) for item in base if item.get(key) not in keys]


def containers(obj: Obj) -> Iterator[Obj]:
    """The containers of a workload's pod template (none for other kinds)."""
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def image_name(ref: str) -> str:
    """An image reference without its tag and digest (a registry's port is kept)."""
    ref = ref.split("@", maxsplit=1)[0]
    colon = ref.rfind(":")
    return ref[:colon] if colon > ref.rfind("/") else ref


def _set_image(obj: Obj, image: Obj) -> None:
    for container in containers(obj):
        current = container["image"]
        name = image_name(current)
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new + current[len(name) :]


def _add_labels(obj: Obj, labels: dict[str, str]) -> None:
    if not labels:
        return
    meta = obj.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **labels}
    for path in SELECTOR_PATHS.get(obj["kind"], ()):
        node = obj
        for part in path:
            node = node.setdefault(part, {})
        node.update(copy.deepcopy(labels))
