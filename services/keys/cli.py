"""``tollgate``: the operator's command line for projects and keys, over the key service's API.

The operator token comes from ``--token-file``, ``TOLLGATE_ADMIN_TOKEN`` (or
``TOLLGATE_KEYS_ADMIN_TOKEN``), or the ``admin-token`` file ``make up`` writes under
``$TOLLGATE_RUN_DIR`` (default ``./.run``). The API is at ``--url``, ``TOLLGATE_KEYS_URL``
or ``http://127.0.0.1:8081``. Exit status: 0 done, 1 the API refused, 2 bad usage,
3 no token or no answer. Policy flags (``--rpm``, ``--tpm``, ``--budget``, ``--models``,
``--endpoints``) are in ``cli_policy.py``; ``admin-keys`` and ``audit`` in ``cli_access.py``.
The token may be an admin key (``sk-tg-admin-...``): the API allows what its permissions do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.keys.cli_access import access_call, add_access_commands, show_access, shows_secret
from services.keys.cli_policy import add_policy_flags, given, needs_current, policy_body, summary

DEFAULT_URL = "http://127.0.0.1:8081"


class CliError(Exception):
    """Something to tell the operator, and the exit status that goes with it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tollgate",
        description="Manage Tollgate's projects, API keys, admin keys and audit log through the"
        " key service.",
        epilog="Token: --token-file, $TOLLGATE_ADMIN_TOKEN, or $TOLLGATE_RUN_DIR/admin-token"
        " (default ./.run/admin-token).",
    )
    parser.add_argument(
        "--url", help=f"key service URL (default $TOLLGATE_KEYS_URL or {DEFAULT_URL})"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the operator token")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answers")
    groups = parser.add_subparsers(dest="group", required=True)

    projects = groups.add_parser("projects", help="projects").add_subparsers(
        dest="action", required=True
    )
    projects.add_parser("create", help="create a project").add_argument("name")
    projects.add_parser("list", help="list projects")
    projects.add_parser("get", help="show a project").add_argument("project_id")
    update_project = projects.add_parser(
        "update", help="rename a project or change its limits (for all its keys together)"
    )
    update_project.add_argument("project_id")
    update_project.add_argument("--name", default=argparse.SUPPRESS, help="a new name")
    add_policy_flags(update_project, removable=True, scopes=False)

    keys = groups.add_parser("keys", help="API keys of a project").add_subparsers(
        dest="action", required=True
    )

    def key_command(name: str, help_text: str, *, key_id: bool = True) -> argparse.ArgumentParser:
        command = keys.add_parser(name, help=help_text)
        command.add_argument("--project", "-p", required=True, help="project id (proj_...)")
        if key_id:
            command.add_argument("key_id", help="key id (key_...)")
        return command

    create = key_command("create", "create a key; its secret is printed once", key_id=False)
    create.add_argument("name")
    create.add_argument("--expires-at", help="ISO 8601 time with timezone, or Unix seconds")
    add_policy_flags(create, removable=False)
    key_command("list", "list keys", key_id=False).add_argument(
        "--all", action="store_true", help="include revoked keys"
    )
    key_command("get", "show a key")
    key_command("default", "make a key the project's default")
    key_command("rename", "rename a key").add_argument("name")
    update = key_command("update", "rename a key or change its limits and scopes")
    update.add_argument("--name", default=argparse.SUPPRESS, help="a new name")
    add_policy_flags(update, removable=True)
    key_command("rotate", "give a key a new secret, printed once").add_argument(
        "--grace", type=int, default=0, metavar="SECONDS", help="how long the old secret works"
    )
    key_command("revoke", "revoke a key for good")
    add_access_commands(groups)
    return parser


def _token(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    files: list[Path]
    if args.token_file is not None:
        files = [Path(args.token_file)]
    else:
        for name in ("TOLLGATE_ADMIN_TOKEN", "TOLLGATE_KEYS_ADMIN_TOKEN"):
            given = environ.get(name)
            if given:
                return given
        files = [Path(environ.get("TOLLGATE_RUN_DIR", ".run")) / "admin-token"]
    for path in files:
        if path.is_file():
            return path.read_text().strip()
    raise CliError(
        "no operator token: set TOLLGATE_ADMIN_TOKEN, or pass --token-file"
        f" (looked for {files[0]})",
        3,
    )


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


class Client:
    """The key service's management API, with the operator token."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer, or CliError with the API's message."""
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the key service at {self.http.base_url}: {exc}", 3
            ) from exc
        if answer.status_code >= 400:
            try:
                error = answer.json()["error"]
                detail = f"{error['message']} (HTTP {answer.status_code}, {error['code']})"
            except (ValueError, KeyError, TypeError):
                detail = f"HTTP {answer.status_code}"
            raise CliError(detail, 1)
        return answer.json()

    def every(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = self.call(
                "GET", path, params={**params, "limit": "100"} | ({"after": after} if after else {})
            )
            items.extend(page["data"])
            if not page["has_more"]:
                return items
            after = page["last_id"]


def _print_secret(key: dict[str, Any], verb: str, out: TextIO, err: TextIO) -> None:
    err.write(f"{verb} key {key['id']} ({key['name']}) in project {key['project_id']}.\n")
    err.write("Copy the secret now: it is not stored and will not be shown again.\n")
    out.write(key["key"] + "\n")
    if key.get("previous_key_valid_until"):
        until = _when(key["previous_key_valid_until"])
        err.write(f"The previous secret keeps working until {until}.\n")


def _update(args: argparse.Namespace, client: Client, path: str) -> Any:
    """PATCH path with the fields the flags give; the item is read first when only one half
    of its rate limits is given (the other half is kept)."""
    current = client.call("GET", path) if needs_current(args) else None
    body = policy_body(args, current) | ({"name": args.name} if given(args, "name") else {})
    if not body:
        raise CliError("nothing to update: give --name or a limit flag (see --help)", 2)
    return client.call("PATCH", path, json=body)


def _project_call(args: argparse.Namespace, client: Client) -> Any:
    if args.action == "create":
        return client.call("POST", "/v1/projects", json={"name": args.name})
    if args.action == "get":
        return client.call("GET", f"/v1/projects/{args.project_id}")
    if args.action == "update":
        return _update(args, client, f"/v1/projects/{args.project_id}")
    return client.every("/v1/projects", {})


def _key_call(args: argparse.Namespace, client: Client) -> Any:
    base = f"/v1/projects/{args.project}/keys"
    one = f"{base}/{getattr(args, 'key_id', '')}"
    if args.action == "list":
        return client.every(base, {"include_revoked": "true" if args.all else "false"})
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name} | policy_body(args, None)
        if args.expires_at:
            given = args.expires_at
            body["expires_at"] = int(given) if given.isdigit() else given
        return client.call("POST", base, json=body)
    if args.action == "update":
        return _update(args, client, one)
    calls: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "get": ("GET", one, None),
        "default": ("POST", f"{one}/default", None),
        "rename": ("PATCH", one, {"name": getattr(args, "name", None)}),
        "rotate": ("POST", f"{one}/rotate", {"grace_period_seconds": getattr(args, "grace", 0)}),
        "revoke": ("DELETE", one, None),
    }
    method, path, json_body = calls[args.action]
    return client.call(method, path, json=json_body)


def _show_keys(answer: Any, out: TextIO) -> None:
    rows = answer if isinstance(answer, list) else [answer]
    header = ["ID", "NAME", "KEY", "STATUS", "DEFAULT", "CREATED", "LAST USED", "EXPIRES", "LIMITS"]
    body_rows = [
        [
            k["id"],
            k["name"],
            k["hint"],
            k["status"],
            "yes" if k["is_default"] else "",
            _when(k["created_at"]),
            _when(k["last_used_at"]),
            _when(k["expires_at"]),
            summary(k),
        ]
        for k in rows
    ]
    _table([header, *body_rows], out)


def _execute(args: argparse.Namespace, client: Client, out: TextIO, err: TextIO) -> None:
    access = args.group in ("admin-keys", "audit")
    secret = args.group == "keys" and args.action in ("create", "rotate")
    calls = {"projects": _project_call, "keys": _key_call}
    answer = (access_call if access else calls[args.group])(args, client)
    if args.json:
        out.write(json.dumps(answer, indent=2) + "\n")
        if secret or shows_secret(args):
            err.write("Copy the secret now: it is not stored and will not be shown again.\n")
    elif access:
        show_access(args, answer, out, err, _table)
    elif args.group == "projects":
        rows = answer if isinstance(answer, list) else [answer]
        table = [[p["id"], p["name"], _when(p["created_at"]), summary(p)] for p in rows]
        _table([["ID", "NAME", "CREATED", "LIMITS"], *table], out)
    elif secret:
        _print_secret(answer, "Created" if args.action == "create" else "Rotated", out, err)
    elif args.action == "revoke":
        out.write(f"Revoked key {answer['id']}.\n")
    else:
        _show_keys(answer, out)


def run(
    argv: Sequence[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one command; the exit status."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    env = os.environ if environ is None else environ
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        client = Client(args.url or env.get("TOLLGATE_KEYS_URL") or DEFAULT_URL, _token(args, env))
        try:
            _execute(args, client, out, err)
        finally:
            client.http.close()
    except CliError as exc:
        err.write(f"tollgate: error: {exc}\n")
        return exc.status
    return 0


def main() -> None:
    """The ``tollgate`` console script."""
    sys.exit(run(sys.argv[1:]))
