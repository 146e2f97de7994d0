"""deploy/k8s/secure, what only it promises (test_k8s.py runs every shared check on it too):
each Deployment reaches the engines it uses over TLS with its own credentials and nothing
else (the gateway no database, metering and billing no Redis, the console no engine, no
service another's Secret), the engines' CA is mounted read-only where the settings point, and
those settings build each service's settings. Each check is shown to find its breakage."""

from __future__ import annotations

import copy
import os
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.deploy.engine_access import (
    CA_FILES,
    CREDENTIALS,
    ENGINE_PREFIXES,
    ENGINES,
    prefix,
    wanted,
)
from tests.deploy.k8s_checks import (
    SECURE,
    Check,
    app_of,
    container,
    deployment,
    of,
    rendered,
    resolved_env,
    settings_class,
)
from tests.deploy.kustomize import Obj, containers

pytestmark = pytest.mark.unit  # no server: `make test-unit`

ENGINE_SECRET = "tollgate-{app}-engines"
TOKENS = {"ADMIN_TOKEN": "a" * 32, "INTERNAL_TOKEN": "i" * 32, "STATE_MAC_KEYS": "k1:" + "m" * 32}


def check_engine_access(objects: list[Obj]) -> list[str]:
    """Each Deployment has exactly the engine settings of the engines it uses: Kafka over
    SASL_SSL, Redis over rediss://, its credentials from its own Secret and no other's; each
    service's Secret holds exactly the credentials its Deployment reads."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of(objects, "ConfigMap").values()}
    engine_secrets = {n for n in of(objects, "Secret") if n.endswith("-engines")}
    read: dict[str, set[str]] = {name: set() for name in engine_secrets}
    problems = []
    for d in of(objects, "Deployment").values():
        app, own = app_of(d), ENGINE_SECRET.format(app=app_of(d))
        for c in containers(d):
            env = {e["name"].removeprefix(prefix(app)): e for e in c.get("env", [])}
            given = {name for name in env if name.startswith(ENGINE_PREFIXES)}
            if missing := wanted(app) - given:
                problems.append(f"{app}: no {sorted(missing)}")
            if extra := given - wanted(app):
                problems.append(f"{app}: {sorted(extra)} for an engine it does not use")
            for name, e in env.items():
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if name in CREDENTIALS and ref != {"name": own, "key": name}:
                    problems.append(f"{app}: {name} is not its own Secret's {own}/{name}: {e}")
                if ref and ref["name"] in engine_secrets:
                    read[ref["name"]].add(ref["key"])
                    if ref["name"] != own:
                        problems.append(f"{app}: {name} reads another service's {ref['name']}")
            problems += [
                f"{app}: envFrom {ref} (engine credentials are read one by one)"
                for ref in c.get("envFrom", [])
                if ref.get("secretRef", {}).get("name") in engine_secrets
            ]
            protocol = env.get("KAFKA_SECURITY_PROTOCOL", {}).get("value")
            if "KAFKA_SECURITY_PROTOCOL" in given and protocol != "SASL_SSL":
                problems.append(f"{app}: KAFKA_SECURITY_PROTOCOL is {protocol}, not SASL_SSL")
            url = env.get("REDIS_URL", {}).get("valueFrom", {}).get("configMapKeyRef")
            if url and not maps[url["name"]][url["key"]].startswith("rediss://"):
                problems.append(f"{app}: REDIS_URL {maps[url['name']][url['key']]} is not TLS")
    secrets = of(objects, "Secret")
    for name, keys in read.items():
        if set(secrets[name]["data"]) != keys:
            problems.append(f"{name} holds {sorted(secrets[name]['data'])}, read: {sorted(keys)}")
    return problems


def check_ca_mounts(objects: list[Obj]) -> list[str]:
    """Every CA file setting names a file of a ConfigMap or Secret volume mounted read-only
    at that folder, the whole volume (no subPath)."""
    data = {(o["kind"], o["metadata"]["name"]): o.get("data", {}) for o in objects}
    problems = []
    for d in of(objects, "Deployment").values():
        app, pod = app_of(d), d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(d):
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for e in c.get("env", []):
                if not e["name"].endswith(CA_FILES):
                    continue
                path = Path(e.get("value", ""))
                mount = mounts.get(str(path.parent))
                if mount is None:
                    problems.append(f"{app}: {e['name']} {path} is in no mounted volume")
                    continue
                if mount.get("readOnly") is not True or "subPath" in mount:
                    problems.append(f"{app}: {mount} is not the whole volume, read-only")
                volume = volumes.get(mount["name"], {})
                source = ("ConfigMap", volume.get("configMap", {}).get("name"))
                if "secret" in volume:
                    source = ("Secret", volume["secret"].get("secretName"))
                if path.name not in data.get(source, {}):
                    problems.append(f"{app}: {e['name']}: {source} has no {path.name}")
    return problems


SECURE_CHECKS: list[Check] = [check_engine_access, check_ca_mounts]


@pytest.mark.parametrize("check", SECURE_CHECKS, ids=lambda c: c.__name__)
def test_the_secured_manifests_pass(check: Check) -> None:
    assert check(rendered(SECURE)) == []


def _env(objects: list[Obj], app: str, setting: str) -> Any:
    name = prefix(app) + setting
    return next(e for e in container(objects, app)["env"] if e["name"] == name)


def _gateway_reads_keys_dsn(o: list[Obj]) -> None:
    ref = {"name": "tollgate-keys-engines", "key": "DATABASE_URL"}
    env = {"name": "TOLLGATE_GATEWAY_DATABASE_URL", "valueFrom": {"secretKeyRef": ref}}
    container(o, "gateway")["env"].append(env)


def _metering_gets_redis(o: list[Obj]) -> None:
    ref = {"name": "tollgate-metering-engines", "key": "REDIS_PASSWORD"}
    env = {"name": "TOLLGATE_METERING_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}}
    container(o, "metering")["env"].append(env)
    of(o, "Secret")["tollgate-metering-engines"]["data"]["REDIS_PASSWORD"] = ""


def _console_gets_kafka(o: list[Obj]) -> None:
    env = {"name": "TOLLGATE_CONSOLE_KAFKA_SECURITY_PROTOCOL", "value": "SASL_SSL"}
    container(o, "console")["env"].append(env)


def _shared_dsn(o: list[Obj]) -> None:
    _env(o, "billing", "DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"] = "tollgate-secrets"


def _someone_elses_user(o: list[Obj]) -> None:
    ref = _env(o, "keys", "KAFKA_SASL_USERNAME")["valueFrom"]["secretKeyRef"]
    ref["name"] = "tollgate-gateway-engines"


def _all_credentials_at_once(o: list[Obj]) -> None:
    container(o, "billing")["envFrom"] = [{"secretRef": {"name": "tollgate-keys-engines"}}]


def _unread_credential(o: list[Obj]) -> None:
    of(o, "Secret")["tollgate-gateway-engines"]["data"]["DATABASE_URL"] = ""


def _plaintext(o: list[Obj]) -> None:
    _env(o, "gateway", "KAFKA_SECURITY_PROTOCOL")["value"] = "PLAINTEXT"


def _redis_in_clear(o: list[Obj]) -> None:
    of(o, "ConfigMap")["tollgate-cluster"]["data"]["REDIS_URL"] = "redis://redis:6379/0"


def _no_ca(o: list[Obj]) -> None:
    env = container(o, "keys")["env"]
    env[:] = [e for e in env if e["name"] != "TOLLGATE_KEYS_REDIS_SSL_CA_CERTS"]


def _writable_ca(o: list[Obj]) -> None:
    mounts = container(o, "metering")["volumeMounts"]
    next(m for m in mounts if m["name"] == "engine-ca")["readOnly"] = False


def _ca_elsewhere(o: list[Obj]) -> None:
    _env(o, "billing", "KAFKA_SSL_CAFILE")["value"] = "/etc/ssl/certs/ca.pem"


def _ca_file_missing(o: list[Obj]) -> None:
    data = of(o, "ConfigMap")["tollgate-engine-ca"]["data"]
    data["bundle.pem"] = data.pop("ca.pem")


SECURE_BREAKAGES = [
    (_gateway_reads_keys_dsn, check_engine_access),
    (_metering_gets_redis, check_engine_access),
    (_console_gets_kafka, check_engine_access),
    (_shared_dsn, check_engine_access),
    (_someone_elses_user, check_engine_access),
    (_all_credentials_at_once, check_engine_access),
    (_unread_credential, check_engine_access),
    (_plaintext, check_engine_access),
    (_redis_in_clear, check_engine_access),
    (_no_ca, check_engine_access),
    (_writable_ca, check_ca_mounts),
    (_ca_elsewhere, check_ca_mounts),
    (_ca_file_missing, check_ca_mounts),
]


@pytest.mark.parametrize(("breakage", "check"), SECURE_BREAKAGES, ids=lambda f: f.__name__)
def test_each_secured_check_finds_its_breakage(breakage: Any, check: Check) -> None:
    objects = copy.deepcopy(rendered(SECURE))
    breakage(objects)
    assert check(objects) != []


def _dsn_template(app: str) -> str:
    """The DATABASE_URL the service's .example file tells the operator to write."""
    lines = (SECURE / f"{app}.env.example").read_text().splitlines()
    found = [line.strip("# ") for line in lines if line.lstrip("# ").startswith("postgresql://")]
    assert len(found) == 1, f"{app}.env.example shows {len(found)} DSNs"
    return found[0]


@pytest.mark.parametrize("app", sorted(a for a, e in ENGINES.items() if "postgres" in e))
def test_the_dsn_shown_verifies_the_server_against_the_mounted_ca(app: str) -> None:
    """A DSN is a secret, written by the operator: its example asks for verify-full against
    the CA file the Kafka and Redis settings name (check_ca_mounts: mounted, read-only)."""
    query = parse_qs(urlsplit(_dsn_template(app)).query)
    ca = _env(rendered(SECURE), app, "KAFKA_SSL_CAFILE")["value"]
    assert query == {"sslmode": ["verify-full"], "sslrootcert": [ca]}


def _fake_secret(app: str, secret: str, key: str) -> str:
    """What an operator fills in: the service's own user, a real password, the DSN shown."""
    if secret != ENGINE_SECRET.format(app=app):
        return TOKENS[key]
    return {
        "KAFKA_SASL_USERNAME": f"tollgate-{app}",
        "REDIS_USERNAME": f"tollgate-{app}",
        "DATABASE_URL": _dsn_template(app) if key == "DATABASE_URL" else "",
    }.get(key, f"{app}-{key}-" + "p" * 24)


def _mounted(objects: list[Obj], app: str, root: Path) -> dict[str, Path]:
    """The container's ConfigMap volumes written under root, as the kubelet mounts them: by
    mount path, the folder holding their files."""
    maps = {o["metadata"]["name"]: o["data"] for o in of(objects, "ConfigMap").values()}
    volumes = {
        v["name"]: v for v in deployment(objects, app)["spec"]["template"]["spec"]["volumes"]
    }
    out = {}
    for m in container(objects, app)["volumeMounts"]:
        if source := volumes[m["name"]].get("configMap"):
            folder = root / app / m["name"]
            folder.mkdir(parents=True)
            for file, text in maps[source["name"]].items():
                (folder / file).write_text(text)
            out[m["mountPath"]] = folder
    return out


def test_settings_accept_what_the_secured_manifests_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each service's settings build from its container's environment with its ConfigMap
    volumes' files in place (a CA file's existence is checked at start), and take Kafka over
    SASL_SSL with SCRAM, Redis over TLS, PostgreSQL with verify-full, each as its own user."""
    objects = rendered(SECURE)
    for app, engines in ENGINES.items():
        for name in [n for n in os.environ if n.startswith("TOLLGATE_")]:
            monkeypatch.delenv(name)
        mounted = _mounted(objects, app, tmp_path)
        env = resolved_env(objects, container(objects, app), partial(_fake_secret, app))
        for name, value in env.items():
            path = Path(value)
            folder = mounted.get(str(path.parent))
            monkeypatch.setenv(name, str(folder / path.name) if folder else value)
        settings: Any = settings_class(app)()
        kafka = settings.kafka
        if "kafka" in engines:
            assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
            assert kafka.sasl_username == f"tollgate-{app}"
            assert kafka.ssl_cafile.is_file(), app
        assert ("redis" in engines) == settings.redis_url.startswith("rediss://"), app
        assert ("redis" in engines) == (settings.redis_username == f"tollgate-{app}"), app
        if "redis" in engines:
            assert settings.redis_auth.ca_certs.is_file(), app
        dsn = settings.database_url.get_secret_value()
        assert ("postgres" in engines) == ("sslmode=verify-full" in dsn), app
