"""`make images`: local stand-ins for the official images docker-compose.yml names.

No image registry is reachable here, so each image is built from what is: a Debian bookworm
base made with ``debootstrap`` and ``docker import``; Python, Kafka (Debian's JDK and the
Kafka jars ``make up`` runs), PostgreSQL and Redis from Debian's packages on it (each
Dockerfile in ``deploy/images/`` says which interface of the official image it keeps); and
Tollgate's own image from the project's Dockerfile with the local Python as its base.
``docker-compose.local.yml`` swaps the image names and nothing else.

Each image carries the hash of its inputs (its build context, its build arguments and the id
of the image it builds on) as a label; a build whose inputs did not change is skipped, so a
warm ``make images`` only hashes files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.docker_engine import Engine, docker_cli
from deploy.servers import KAFKA_LOG4J, REPO, StackError, fetch_kafka

IMAGES = REPO / "deploy" / "images"
LABEL = "org.tollgate.inputs"
MIRROR = os.environ.get("TOLLGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE = "tollgate-local/debian:bookworm"
PYTHON = "tollgate-local/python:3.11"
TOLLGATE = "tollgate-local/tollgate:latest"
# What the image's apt reads: Debian's usual suites, and no check of a Release file's
# Valid-Until, as on the host (the mirror served here may be a dated snapshot).
APT_SOURCES = """Types: deb
URIs: {mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {mirror}-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
APT_CONF = (
    'Acquire::Check-Valid-Until "false";\nAcquire::Languages "none";\n'
    'APT::Install-Recommends "false";\n'
)
# Services do not start while a package installs in a build (the usual image convention).
POLICY_RC = "#!/bin/sh\nexit 101\n"


@dataclass(frozen=True)
class Image:
    """One image built with `docker build` from a staged context."""

    tag: str
    folder: str  # under deploy/images, or "" for the repo's own Dockerfile
    base: str = BASE
    extra: tuple[tuple[Path, str], ...] = field(default=())  # (source, name in the context)


def images() -> tuple[Image, ...]:
    """What `make images` builds, in order (each after the image it builds on)."""
    libs = fetch_kafka()
    extra_ca = Path("/usr/local/share/ca-certificates")
    return (
        Image(PYTHON, "python", extra=((extra_ca, "extra-ca"),)),
        Image(
            "tollgate-local/kafka:4.1.1",
            "kafka",
            extra=((libs, "libs"), (KAFKA_LOG4J, "log4j2.properties")),
        ),
        Image("tollgate-local/postgres:15", "postgres"),
        Image("tollgate-local/redis:7", "redis"),
        Image(TOLLGATE, "", base=PYTHON),
    )


class Builder:
    """Builds the images on one engine, skipping those whose inputs did not change."""

    def __init__(self, engine: Engine) -> None:
        self.env = engine.env()
        self.docker = docker_cli()

    def label(self, tag: str) -> str | None:
        done = self.docker_run(
            "image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def image_id(self, tag: str) -> str:
        done = self.docker_run("image", "inspect", "-f", "{{.Id}}", tag)
        if done.returncode != 0:
            raise StackError(f"image {tag} is missing: {done.stderr.strip()}")
        return done.stdout.strip()

    def base(self) -> bool:
        """The Debian bookworm base from debootstrap; True when it was built now."""
        inputs = _digest([MIRROR, APT_SOURCES, APT_CONF, POLICY_RC, "minbase", "bookworm", "v1"])
        if self.label(BASE) == inputs:
            return False
        if shutil.which("debootstrap") is None:
            raise StackError("no debootstrap: run `make bootstrap`")
        with tempfile.TemporaryDirectory(prefix="tollgate-rootfs-") as tmp:
            root = Path(tmp) / "root"
            _run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR], "debootstrap")
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            (root / "etc/apt/sources.list.d/debian.sources").write_text(
                APT_SOURCES.format(mirror=MIRROR)
            )
            (root / "etc/apt/apt.conf.d/90tollgate").write_text(APT_CONF)
            policy = root / "usr/sbin/policy-rc.d"
            policy.write_text(POLICY_RC)
            policy.chmod(0o755)
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (root / cache).glob("*"):
                    if item.is_file():
                        item.unlink()
            tar = subprocess.Popen(
                [
                    "tar",
                    "-C",
                    str(root),
                    "--numeric-owner",
                    "--exclude=./proc/*",
                    "--exclude=./sys/*",
                    "--exclude=./dev/*",
                    "-c",
                    ".",
                ],
                stdout=subprocess.PIPE,
            )
            imported = subprocess.run(
                [self.docker, "import", "--change", f"LABEL {LABEL}={inputs}",
                 "--change", 'CMD ["bash"]', "--change", "ENV LANG=C.UTF-8", "-", BASE],
                stdin=tar.stdout, env=self.env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            tar.wait()
            if imported.returncode != 0 or tar.returncode != 0:
                raise StackError(f"docker import failed: {imported.stderr}")
        return True

    def build(self, image: Image) -> bool:
        """Build one image unless its inputs are unchanged; True when it was built now."""
        source = IMAGES / image.folder if image.folder else REPO
        files = _context_files(source, bool(image.folder))
        extra = [(src, name) for src, name in image.extra if src.exists()]
        inputs = _digest(
            [image.tag, self.image_id(image.base)],
            files=[(str(p.relative_to(source)), p) for p in files]
            + [(f"{name}/{p.relative_to(src)}" if src.is_dir() else name, p)
               for src, name in extra for p in _tree(src)],
        )  # fmt: skip
        if self.label(image.tag) == inputs:
            return False
        with tempfile.TemporaryDirectory(prefix="tollgate-context-") as tmp:
            context = Path(tmp)
            if image.folder:
                shutil.copytree(source, context, dirs_exist_ok=True)
                for src, name in image.extra:
                    if src.is_dir():
                        shutil.copytree(src, context / name, dirs_exist_ok=True)
                    elif src.exists():
                        shutil.copy2(src, context / name)
                    else:
                        (context / name).mkdir()
            else:
                context = REPO
            argv = ["build", "--network", "host", "--build-arg", f"BASE={image.base}"]
            argv += ["--label", f"{LABEL}={inputs}", "-t", image.tag, str(context)]
            done = self.docker_run(*argv)
            if done.returncode != 0:
                raise StackError(
                    f"building {image.tag} failed:\n{(done.stdout + done.stderr)[-3000:]}"
                )
        return True

    def docker_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # The classic builder: dockerd 20.10 has no buildx, and it needs no build container.
        return subprocess.run(
            [self.docker, *args],
            env={**self.env, "DOCKER_BUILDKIT": "0"},
            capture_output=True,
            text=True,
            check=False,
        )


def build_all(engine: Engine) -> None:
    """Build every local image that is missing or stale, saying what each took."""
    builder = Builder(engine)
    started = time.monotonic()
    built = builder.base()
    print(f"image {BASE:34} {'built' if built else 'up to date'}", flush=True)
    for image in images():
        one = time.monotonic()
        built = builder.build(image)
        state = f"built in {time.monotonic() - one:.1f}s" if built else "up to date"
        print(f"image {image.tag:34} {state}", flush=True)
    # Images our rebuilds replaced (untagged now): only ours, whatever else the engine holds.
    builder.docker_run("image", "prune", "-f", "--filter", f"label={LABEL}")
    print(f"images ready in {time.monotonic() - started:.1f}s", flush=True)


def _context_files(source: Path, whole: bool) -> list[Path]:
    """The files a build reads: a whole image folder, or what the repo's Dockerfile copies."""
    if whole:
        return _tree(source)
    names = ["Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md"]
    found = [source / n for n in names]
    for folder in ("shared", "services", "deploy"):
        found += _tree(source / folder)
    return found


def _tree(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _digest(parts: Iterable[str], files: Iterable[tuple[str, Path]] = ()) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for name, path in files:
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"{what} failed:\n{(done.stdout + done.stderr)[-3000:]}")
