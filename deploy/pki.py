"""A private certificate authority for the secured stack, made at run time with openssl.

``ensure_pki(folder)`` makes, once, under ``folder`` (each key 0600 from its creation:
``deploy/private.py``): the CA (``ca.pem``, ``ca.key``), a server certificate for every engine
on this machine (``server.pem`` and ``server.key``: names ``localhost`` and the addresses
``127.0.0.1`` and ``::1``), and a client certificate (``client.pem``, ``client.key``) for
mutual TLS. Certificates last a year; nothing here is ever committed, and a new folder gets a
new CA. ``issue`` makes further ones, an expired one too (the refusal tests).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.private import write_private
from deploy.servers import StackError

DAYS = 365
SERVER_NAMES = ("DNS:localhost", "IP:127.0.0.1", "IP:0:0:0:0:0:0:0:1")


@dataclass(frozen=True)
class Pki:
    """Where the CA and the certificates of one run are."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def bundle(self, name: str) -> Path:
        """The key and its certificate in one PEM file (what Kafka's PEM keystore reads)."""
        return self.folder / f"{name}.bundle.pem"


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise StackError("openssl is needed to make the private CA: run `make bootstrap`")
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {done.stderr[-2000:]}")


def _new_key(path: Path) -> None:
    """An EC P-256 key in PKCS#8 (every engine and client here reads it), 0600 at birth."""
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        made = Path(scratch) / "key"
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(made)
        )
        write_private(path, made.read_text())


def issue(
    pki: Pki,
    name: str,
    common_name: str,
    *,
    alt_names: tuple[str, ...] = (),
    client: bool = False,
    expired: bool = False,
) -> None:
    """A certificate named name, signed by the CA (and its key; a bundle of both)."""
    _new_key(pki.key(name))
    request = pki.folder / f"{name}.csr"
    _openssl(
        "req",
        "-new",
        "-key",
        str(pki.key(name)),
        "-subj",
        f"/CN={common_name}",
        "-out",
        str(request),
    )
    usage = "clientAuth" if client else "serverAuth,clientAuth"
    extensions = pki.folder / f"{name}.ext"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if alt_names:
        lines.append("subjectAltName=" + ",".join(alt_names))
    extensions.write_text("\n".join(lines) + "\n")
    if expired:
        # openssl 3.0's x509 has no -not_after: signed through a throwaway CA database.
        _sign_expired(pki, request, extensions, pki.cert(name))
    else:
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(pki.ca), "-CAkey", str(pki.ca_key),
            "-CAcreateserial", "-out", str(pki.cert(name)), "-extfile", str(extensions),
            "-days", str(DAYS),
        )  # fmt: skip
    request.unlink()
    extensions.unlink()
    write_private(pki.bundle(name), pki.key(name).read_text() + pki.cert(name).read_text())


def _sign_expired(pki: Pki, request: Path, extensions: Path, out: Path) -> None:
    """A certificate whose validity ended in 2020, through ``openssl ca`` (which takes dates)."""
    with tempfile.TemporaryDirectory(dir=pki.folder) as scratch:
        base = Path(scratch)
        (base / "index.txt").write_text("")
        (base / "serial").write_text("1000\n")
        config = base / "ca.cnf"
        config.write_text(
            "\n".join(
                [
                    "[ca]",
                    "default_ca=expired",
                    "[expired]",
                    f"database={base / 'index.txt'}",
                    f"serial={base / 'serial'}",
                    f"new_certs_dir={base}",
                    "default_md=sha256",
                    "policy=anything",
                    "unique_subject=no",
                    "[anything]",
                    "commonName=supplied",
                    "",
                ]
            )
        )
        _openssl(
            "ca",
            "-batch",
            "-config",
            str(config),
            "-in",
            str(request),
            "-out",
            str(out),
            "-cert",
            str(pki.ca),
            "-keyfile",
            str(pki.ca_key),
            "-extfile",
            str(extensions),
            "-startdate",
            "20190101000000Z",
            "-enddate",
            "20200101000000Z",
            "-notext",
        )


def ensure_pki(folder: Path) -> Pki:
    """The CA, a server and a client certificate under folder, made once (under a lock: two
    processes starting the secured engines at once make one CA, not two half ones)."""
    pki = Pki(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (pki.ca.exists() and pki.ca_key.exists()):
            _new_key(pki.ca_key)
            _openssl(
                "req", "-x509", "-new", "-key", str(pki.ca_key), "-sha256", "-days", str(DAYS),
                "-subj", "/CN=Tollgate private CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(pki.ca),
            )  # fmt: skip
        for name, made in (("server", _server), ("client", _client)):
            if not all(p.exists() for p in (pki.cert(name), pki.key(name), pki.bundle(name))):
                made(pki)
    return pki


def _server(pki: Pki) -> None:
    issue(pki, "server", "localhost", alt_names=SERVER_NAMES)


def _client(pki: Pki) -> None:
    issue(pki, "client", "tollgate-client", client=True)
