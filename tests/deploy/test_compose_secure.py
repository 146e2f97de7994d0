"""docker-compose.secure.yml without an engine: over docker-compose.yml (merged here as Compose
merges the fields it sets, interpolated as Compose does), every variable it sets is a setting
its service reads; the local engines and migrate stay off and nothing waits for them; each
service reaches the engines it uses, over TLS, with its own credentials from the env file and
no other service's; the CA is mounted read-only where the settings point; the env file's
example names what the files ask for; and the settings each container gets build. Each check
is shown to find its breakage."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.deploy.engine_access import (
    CA_FILES,
    CREDENTIALS,
    ENGINE_PREFIXES,
    ENGINES,
    prefix,
    wanted,
)
from tests.deploy.k8s_checks import is_secret, settings_class
from tests.deploy.kustomize import read_env_file

pytestmark = pytest.mark.unit  # no server: `make test-unit`

REPO = Path(__file__).resolve().parents[2]
PLAIN = REPO / "docker-compose.yml"
OVERRIDE = REPO / "docker-compose.secure.yml"
EXAMPLE = REPO / "deploy" / "compose" / "secure.env.example"
LOCAL_ENGINES = {"kafka", "postgres", "redis", "migrate"}
LOCAL_HOSTS = ("kafka:9092", "@postgres:", "redis://redis:")
CA = "/etc/tollgate/engine-ca/ca.pem"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
MERGED = {"environment", "depends_on", "volumes", "profiles"}  # what _merged merges

Services = dict[str, dict[str, Any]]
Check = Callable[[Services], list[str]]


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _target(volume: str | dict[str, Any]) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def _merged() -> Services:
    """docker-compose.yml's services with the override's, merged as Compose merges those
    fields: environment and depends_on by key, volumes by target, profiles together."""
    services: Services = copy.deepcopy(_load(PLAIN)["services"])
    for name, spec in _load(OVERRIDE)["services"].items():
        assert set(spec) <= MERGED, f"{name}: this test merges {sorted(MERGED)} only"
        into = services[name]
        into["environment"] = into.get("environment", {}) | spec.get("environment", {})
        for dep, condition in spec.get("depends_on", {}).items():
            into["depends_on"][dep] = into["depends_on"].get(dep, {}) | condition
        volumes = {_target(v): v for v in into.get("volumes", []) + spec.get("volumes", [])}
        into["volumes"] = list(volumes.values())
        into["profiles"] = list(dict.fromkeys(into.get("profiles", []) + spec.get("profiles", [])))
    return services


def _interpolated(value: str, env: Mapping[str, str]) -> str:
    """value with its ${...} replaced as Compose does; a missing required one raises KeyError."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        given = env.get(name)
        if op in (":?", "?") and (given is None or (op == ":?" and not given)):
            raise KeyError(name)
        if (op == ":-" and not given) or (op == "-" and given is None):
            return arg
        return given or ""

    return VARIABLE.sub(one, value)


def _enabled(services: Services) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if not s.get("profiles")}


def check_variables(services: Services) -> list[str]:
    """Every variable a running service gets is a setting it reads (or the catalogue's
    ``${...}``); a secret setting is one required variable of the env file, never written."""
    catalogue = (REPO / "deploy" / "models.yaml").read_text()
    problems = []
    for app, spec in _enabled(services).items():
        if "build" not in spec or not spec.get("environment"):
            continue
        fields = {prefix(app) + f.upper(): i for f, i in settings_class(app).model_fields.items()}
        for name, value in spec["environment"].items():
            if name.startswith("TOLLGATE_DEMO_") and "${" + name in catalogue:
                continue
            if name not in fields:
                problems.append(f"{app}: {name} is read by nothing")
            elif is_secret(fields[name]) and not re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)):
                problems.append(f"{app}: {name} is a secret: take it from the env file")
    return problems


def check_engines_off(services: Services) -> list[str]:
    """The local engines and migrate do not start, and what waited for them still waits for
    nothing else (a required dependency on a service that is off is an invalid project)."""
    plain = _load(PLAIN)["services"]
    problems = [f"{n} starts" for n in LOCAL_ENGINES if n in _enabled(services)]
    for name, spec in _enabled(services).items():
        for dep, condition in spec.get("depends_on", {}).items():
            if dep not in _enabled(services) and condition.get("required", True):
                problems.append(f"{name} requires {dep}, which is off")
            if condition.get("condition") != plain[name]["depends_on"][dep]["condition"]:
                problems.append(f"{name}: waits for {dep} otherwise than docker-compose.yml")
    return problems


def check_credentials(services: Services) -> list[str]:
    """Each service has exactly the engine settings of the engines it uses: Kafka over
    SASL_SSL, its credentials its own variables, no other service's variable, no local
    engine left."""
    problems = []
    for app, spec in _enabled(services).items():
        if app not in ENGINES:
            continue
        env = {n.removeprefix(prefix(app)): str(v) for n, v in spec.get("environment", {}).items()}
        given = {name for name in env if name.startswith(ENGINE_PREFIXES)}
        if given != wanted(app):
            problems.append(f"{app}: engine settings {sorted(given ^ wanted(app))} differ")
        for name, value in env.items():
            if name in CREDENTIALS and value != "${" + prefix(app) + name + ":?}":
                problems.append(f"{app}: {name} is not its own {prefix(app)}{name}: {value}")
            others = {v for v, _, _ in VARIABLE.findall(value)} - {prefix(app) + name}
            if any(o.startswith(prefix(a)) for o in others for a in ENGINES):
                problems.append(f"{app}: {name} reads another service's {others}")
            if any(host in value for host in LOCAL_HOSTS):
                problems.append(f"{app}: {name} {value} is a local engine")
        if "KAFKA_SECURITY_PROTOCOL" in env and env["KAFKA_SECURITY_PROTOCOL"] != "SASL_SSL":
            problems.append(f"{app}: KAFKA_SECURITY_PROTOCOL {env['KAFKA_SECURITY_PROTOCOL']}")
    return problems


def check_ca(services: Services) -> list[str]:
    """Where a service reaches an engine, the CA file is bound read-only (never created
    empty) where its CA settings point."""
    problems = []
    for app, spec in _enabled(services).items():
        env = {n.removeprefix(prefix(app)): v for n, v in spec.get("environment", {}).items()}
        problems += [
            f"{app}: {name} is {env[name]}, not the mounted {CA}"
            for name in CA_FILES
            if name in env and env[name] != CA
        ]
        if not ENGINES.get(app):
            continue
        mount = next((v for v in spec.get("volumes", []) if _target(v) == CA), None)
        if not isinstance(mount, dict) or mount.get("type") != "bind":
            problems.append(f"{app}: no bind of the CA at {CA}: {mount}")
        elif not mount.get("read_only") or mount.get("bind", {}).get("create_host_path", True):
            problems.append(f"{app}: the CA bind {mount} is writable or made when missing")
    return problems


CHECKS: list[Check] = [check_variables, check_engines_off, check_credentials, check_ca]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_override_passes(check: Check) -> None:
    assert check(_merged()) == []


def _misspelt(s: Services) -> None:
    s["gateway"]["environment"]["TOLLGATE_GATEWAY_KAFKA_SASL_USER"] = "${X:?}"


def _password_written(s: Services) -> None:
    s["keys"]["environment"]["TOLLGATE_KEYS_REDIS_PASSWORD"] = "p" * 32


def _engine_on(s: Services) -> None:
    s["postgres"]["profiles"] = []


def _still_required(s: Services) -> None:
    s["gateway"]["depends_on"]["kafka"]["required"] = True


def _waits_otherwise(s: Services) -> None:
    s["billing"]["depends_on"]["postgres"]["condition"] = "service_started"


def _gateway_gets_a_database(s: Services) -> None:
    s["gateway"]["environment"]["TOLLGATE_GATEWAY_DATABASE_URL"] = "${TOLLGATE_KEYS_DATABASE_URL:?}"


def _metering_gets_redis(s: Services) -> None:
    s["metering"]["environment"]["TOLLGATE_METERING_REDIS_URL"] = "${TOLLGATE_REDIS_URL:?}"


def _someone_elses_password(s: Services) -> None:
    env = s["billing"]["environment"]
    env["TOLLGATE_BILLING_KAFKA_SASL_PASSWORD"] = "${TOLLGATE_METERING_KAFKA_SASL_PASSWORD:?}"


def _local_database_left(s: Services) -> None:
    url = "postgresql://tollgate:${POSTGRES_PASSWORD}@postgres:5432/tollgate"
    s["metering"]["environment"]["TOLLGATE_METERING_DATABASE_URL"] = url


def _plaintext(s: Services) -> None:
    s["keys"]["environment"]["TOLLGATE_KEYS_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"


def _ca_elsewhere(s: Services) -> None:
    s["gateway"]["environment"]["TOLLGATE_GATEWAY_REDIS_SSL_CA_CERTS"] = "/etc/ssl/ca.pem"


def _ca_writable(s: Services) -> None:
    next(v for v in s["keys"]["volumes"] if _target(v) == CA)["read_only"] = False


def _ca_unmounted(s: Services) -> None:
    s["billing"]["volumes"] = [v for v in s["billing"]["volumes"] if _target(v) != CA]


BREAKAGES = [
    (_misspelt, check_variables),
    (_password_written, check_variables),
    (_engine_on, check_engines_off),
    (_still_required, check_engines_off),
    (_waits_otherwise, check_engines_off),
    (_gateway_gets_a_database, check_credentials),
    (_metering_gets_redis, check_credentials),
    (_someone_elses_password, check_credentials),
    (_local_database_left, check_credentials),
    (_plaintext, check_credentials),
    (_ca_elsewhere, check_ca),
    (_ca_writable, check_ca),
    (_ca_unmounted, check_ca),
]


@pytest.mark.parametrize(("breakage", "check"), BREAKAGES, ids=lambda f: f.__name__)
def test_each_check_finds_its_breakage(breakage: Callable[[Services], None], check: Check) -> None:
    services = _merged()
    breakage(services)
    assert check(services) != []


def _variables(path: Path) -> dict[str, str | None]:
    """Each variable a file interpolates, and its default (None: required)."""
    found = VARIABLE.findall(path.read_text())
    return {name: arg if op in (":-", "-") else None for name, op, arg in found}


def test_the_example_names_what_the_files_ask_for() -> None:
    """Every variable the two files require is in the example (empty: nothing committed), and
    the override's optional ones are there as comments with the override's default."""
    example = read_env_file(EXAMPLE)
    asked = _variables(PLAIN) | _variables(OVERRIDE)
    required = {name for name, default in asked.items() if default is None}
    assert set(example) == required
    assert set(example.values()) == {""}
    text = EXAMPLE.read_text()
    for name, default in _variables(OVERRIDE).items():
        if default is not None:
            assert f"# {name}={default}\n" in text, name
    path = EXAMPLE.with_suffix("").relative_to(REPO).as_posix()  # secure.env
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{path} is not git-ignored"


def _dsn_template() -> str:
    found = [
        line.strip("# ")
        for line in EXAMPLE.read_text().splitlines()
        if line.lstrip("# ").startswith("postgresql://")
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_dsn_shown_verifies_the_server_against_the_mounted_ca() -> None:
    query = parse_qs(urlsplit(_dsn_template()).query)
    assert query == {"sslmode": ["verify-full"], "sslrootcert": [CA]}


def _filled(ca: Path) -> dict[str, str]:
    """The example as an operator fills it in."""
    out = {
        "TOLLGATE_ADMIN_TOKEN": "a" * 32,
        "TOLLGATE_INTERNAL_TOKEN": "i" * 32,
        "TOLLGATE_STATE_MAC_KEYS": "k1:" + "m" * 32,
        "POSTGRES_PASSWORD": "any",
        "TOLLGATE_KAFKA_BOOTSTRAP": "b-1.kafka.example.com:9096",
        "TOLLGATE_REDIS_URL": "rediss://redis.example.com:6379/0",
        "TOLLGATE_ENGINE_CA": str(ca),
    }
    for name in read_env_file(EXAMPLE).keys() - out.keys():
        app = name.split("_")[1].lower()
        if name.endswith("_USERNAME"):
            out[name] = f"tollgate-{app}"
        elif name.endswith("_DATABASE_URL"):
            out[name] = _dsn_template()
        else:
            out[name] = f"{name.lower()}-" + "p" * 16
    return out


def test_settings_accept_what_the_override_sets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each service's settings build from its container's environment as Compose makes it
    from the filled-in example, the CA file where the bind puts it, and take Kafka over
    SASL_SSL with SCRAM, Redis over TLS, PostgreSQL with verify-full, each as its own user."""
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA")
    filled = _filled(ca)
    for app, spec in _enabled(_merged()).items():
        if app not in ENGINES:
            continue
        for name in [n for n in os.environ if n.startswith("TOLLGATE_")]:
            monkeypatch.delenv(name)
        binds = {
            _target(v): _interpolated(v["source"], filled)
            for v in spec.get("volumes", [])
            if isinstance(v, dict) and v["type"] == "bind"
        }
        for name, written in spec["environment"].items():
            value = _interpolated(str(written), filled)
            monkeypatch.setenv(name, binds.get(value, value))
        settings: Any = settings_class(app)()
        engines, kafka = ENGINES[app], settings.kafka
        if "kafka" in engines:
            assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
            assert (kafka.sasl_username, kafka.ssl_cafile) == (f"tollgate-{app}", ca)
        assert ("redis" in engines) == settings.redis_url.startswith("rediss://"), app
        assert ("redis" in engines) == (settings.redis_username == f"tollgate-{app}"), app
        assert settings.redis_auth.ca_certs == (ca if "redis" in engines else None), app
        dsn = settings.database_url.get_secret_value()
        assert ("postgres" in engines) == ("sslmode=verify-full" in dsn), app
