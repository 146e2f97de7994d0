"""A small kustomize for the tests: the fields deploy/k8s/kustomization.yaml uses, no more.

kustomize is not installed here (nor is a Python port of it), so this renders what the base
uses, as kustomize documents it: ``resources`` (files of this folder), ``configMapGenerator``
and ``secretGenerator`` (``files``, ``envs``, ``literals``), ``images`` and ``commonLabels``
(on every object's labels and on the selectors and pod templates it knows). Any other field
is refused, so a kustomization that grows past this fails the tests instead of being half
rendered. Files outside the folder are refused, as kustomize's default load restrictor does.

One difference, on purpose: generated ConfigMaps and Secrets keep their names (kustomize adds
a hash suffix and rewrites the references), so the tests check references by those names.
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
    "images",
    "commonLabels",
}
GENERATOR_FIELDS = {"name", "files", "envs", "literals"}
# Where commonLabels go besides metadata.labels (kustomize's commonLabels field specs).
SELECTOR_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels")),
    "Service": (("spec", "selector"),),
    "PodDisruptionBudget": (("spec", "selector", "matchLabels"),),
}


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not, or names a missing file."""


def render(root: Path, env_file: Callable[[Path], Path] | None = None) -> list[Obj]:
    """Every object ``kubectl apply -k root`` would send; env_file maps a generator's env file
    to the one to read (the tests read ``secrets.env.example`` for the uncommitted file)."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    if unknown := set(spec) - SUPPORTED:
        raise KustomizeError(f"fields this renderer does not support: {sorted(unknown)}")
    objects: list[Obj] = []
    for resource in spec.get("resources", []):
        objects += [d for d in yaml.safe_load_all(_inside(root, resource).read_text()) if d]
    for generator in spec.get("configMapGenerator", []):
        objects.append(_generated("ConfigMap", root, generator, env_file))
    for generator in spec.get("secretGenerator", []):
        objects.append(_generated("Secret", root, generator, env_file))
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


def _generated(
    kind: str, root: Path, generator: Obj, env_file: Callable[[Path], Path] | None
) -> Obj:
    if unknown := set(generator) - GENERATOR_FIELDS:
        raise KustomizeError(f"{generator['name']}: unsupported fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for name in generator.get("files", []):
        path = _inside(root, name)
        data[path.name] = path.read_text()
    for name in generator.get("envs", []):
        path = _inside(root, name)
        data |= read_env_file(env_file(path) if env_file else path)
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


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
