"""The test renderer (tests/deploy/kustomize.py) itself: bases, strategic merge patches and
what it refuses, on small kustomizations; and, where kubectl is installed, that it renders
both entries of deploy/k8s as ``kubectl kustomize`` does, but for the generated names' hash
suffixes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_checks import ENTRIES, K8S, UNCOMMITTED
from tests.deploy.kustomize import KustomizeError, Obj, render

pytestmark = pytest.mark.unit  # no server: `make test-unit`

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers:
        - name: app
          image: app
          args: [serve]
          env:
            - {name: A, value: "1"}
            - name: DSN
              valueFrom: {secretKeyRef: {name: shared, key: DSN}}
            - {name: C, value: "3"}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {}
"""


def _write(folder: Path, files: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        (folder / name).write_text(text)
    return folder


def _overlay(tmp_path: Path, patch: str, **fields: Any) -> Path:
    _write(tmp_path / "base", {"kustomization.yaml": {"resources": ["app.yaml"]}})
    _write(tmp_path / "base", {"app.yaml": DEPLOYMENT})
    spec = {"resources": ["../base"], "patches": [{"path": "patch.yaml"}], **fields}
    return _write(tmp_path / "overlay", {"kustomization.yaml": spec, "patch.yaml": patch})


PATCH = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      containers:
        - name: app
          env:
            - {name: B, value: "2"}
            - name: DSN
              valueFrom: {secretKeyRef: {name: own}}
          volumeMounts:
            - {name: ca, mountPath: /ca, readOnly: true}
      volumes:
        - name: ca
          configMap: {name: ca}
"""


def test_a_patch_merges_keyed_lists_in_kustomizes_order(tmp_path: Path) -> None:
    """Items by key, maps by key; the patch's items first, then the base's others."""
    (deployment,) = render(_overlay(tmp_path, PATCH))
    pod = deployment["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["env"] == [
        {"name": "B", "value": "2"},
        {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "own", "key": "DSN"}}},
        {"name": "A", "value": "1"},
        {"name": "C", "value": "3"},
    ]
    assert [m["mountPath"] for m in app["volumeMounts"]] == ["/ca", "/tmp"]
    assert [v["name"] for v in pod["volumes"]] == ["ca", "tmp"]
    assert (app["image"], app["args"]) == ("app", ["serve"])


def test_a_null_deletes_a_key(tmp_path: Path) -> None:
    patch = PATCH.replace('- {name: B, value: "2"}', "- {name: A, value: null}")
    (deployment,) = render(_overlay(tmp_path, patch))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["env"][0] == {"name": "A"}


@pytest.mark.parametrize(
    ("patch", "refusal"),
    [
        (PATCH.replace("env:", "args: [x]\n          env:"), "no list 'args'"),
        (PATCH.replace("- name: app\n", "- name: app\n          $patch: replace\n"), "directive"),
        (PATCH.replace("{name: app}", "{name: other}"), "0 objects"),
        (PATCH.replace("kind: Deployment", "kind: Service"), "patches of Service"),
        (PATCH + "---\n" + PATCH, "one patch a file"),
    ],
    ids=["unkeyed list", "directive", "no target", "not a Deployment", "two patches"],
)
def test_a_patch_it_cannot_apply_faithfully_is_refused(
    tmp_path: Path, patch: str, refusal: str
) -> None:
    with pytest.raises(KustomizeError, match=refusal):
        render(_overlay(tmp_path, patch))


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"namePrefix": "x-"}, "does not support"),
        ({"resources": [".."]}, "kustomize refuses the cycle"),
        ({"resources": ["../base/app.yaml"]}, "load restrictor"),
        ({"patches": [{"path": "patch.yaml", "target": {"kind": "Deployment"}}]}, "target"),
        ({"configMapGenerator": [{"name": "c", "behavior": "merge"}]}, "behavior"),
        ({"configMapGenerator": [{"name": "c"}, {"name": "c"}]}, "made twice"),
    ],
    ids=["field", "base containing its overlay", "file outside", "target", "behavior", "twice"],
)
def test_what_it_does_not_render_as_kustomize_is_refused(
    tmp_path: Path, fields: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(KustomizeError, match=refusal):
        render(_overlay(tmp_path, PATCH, **fields))


def _as_kubectl_sees_it(tmp_path: Path, entry: Path) -> Path:
    """A copy of deploy/k8s with every uncommitted file made from its example."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns(*set().union(*UNCOMMITTED.values())))
    for folder, names in UNCOMMITTED.items():
        for name in names:
            target = copy / folder.relative_to(K8S) / name
            shutil.copy(target.with_name(name + ".example"), target)
    return copy / entry.relative_to(K8S)


def _unhashed(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    """Objects by kind and name, generated names (and references to them) without the hash."""
    names = {
        o["metadata"]["name"]: re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])
        for o in objects
        if o["kind"] in ("ConfigMap", "Secret")
    }

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return names.get(node, node) if isinstance(node, str) else node

    return {(o["kind"], o["metadata"]["name"]): o for o in map(strip, objects)}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) not here")
@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_it_renders_what_kubectl_kustomize_does(tmp_path: Path, entry: Path) -> None:
    root = _as_kubectl_sees_it(tmp_path, entry)
    out = subprocess.run(
        ["kubectl", "kustomize", str(root)], capture_output=True, text=True, check=True
    ).stdout
    real = _unhashed([d for d in yaml.safe_load_all(out) if d])
    assert _unhashed(render(root)) == real
