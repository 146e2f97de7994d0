"""The command line's access commands: ``tollgate admin-keys create/list/get/rotate/revoke``
and ``tollgate audit`` (the audit log, newest first, with its filters).

Apart from ``cli.py`` (projects and keys) because they speak to ``/v1/organization``. Each
works with the operator token or an admin key holding the permission (``admin_keys:write``,
``audit:read``): the token is read as for every command.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from shared.events import AUDIT_EVENT_TYPES, PERMISSIONS

if TYPE_CHECKING:
    from services.keys.cli import Client

ADMIN_KEYS = "/v1/organization/admin_api_keys"
AUDIT_LOGS = "/v1/organization/audit_logs"
_CHANGES_WIDTH = 100


def _list_of(choices: tuple[str, ...] | None) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give at least one, comma-separated")
        unknown = [t for t in items if choices is not None and t not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (one of {', '.join(choices or ())})"
            )
        return items

    return parse


def _moment(text: str) -> int:
    """Unix seconds, or an ISO 8601 time with a timezone."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: Unix seconds or ISO 8601") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a timezone (Z or +00:00)")
    return int(moment.timestamp())


def add_access_commands(groups: Any) -> None:
    """Add ``admin-keys`` and ``audit`` to the parser's command groups."""
    admin = groups.add_parser("admin-keys", help="admin keys (management credentials)")
    actions = admin.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an admin key; its secret is printed once")
    create.add_argument("name")
    create.add_argument(
        "--permissions",
        required=True,
        type=_list_of(PERMISSIONS),
        help=f"comma-separated, of: {', '.join(PERMISSIONS)}",
    )
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--organization", action="store_true", help="scope: every project")
    scope.add_argument(
        "--projects", type=_list_of(None), help="scope: these projects (comma-separated ids)"
    )
    actions.add_parser("list", help="list admin keys")
    for name, text in (
        ("get", "show an admin key"),
        ("rotate", "give an admin key a new secret, printed once (the old one stops at once)"),
        ("revoke", "revoke an admin key for good"),
    ):
        actions.add_parser(name, help=text).add_argument("key_id", help="admkey_...")

    audit = groups.add_parser("audit", help="the audit log, newest first")
    audit.add_argument("--since", type=_moment, help="from this time (Unix seconds or ISO 8601)")
    audit.add_argument("--until", type=_moment, help="up to this time (included)")
    audit.add_argument("--project", action="append", default=[], help="a project id (repeat)")
    audit.add_argument(
        "--type",
        action="append",
        default=[],
        choices=AUDIT_EVENT_TYPES,
        help="an event type (repeat)",
    )
    audit.add_argument("--actor", action="append", default=[], help="admkey_... or root (repeat)")
    audit.add_argument("--resource", action="append", default=[], help="a resource id (repeat)")
    audit.add_argument(
        "--limit", type=int, default=100, help="at most this many entries (default 100)"
    )


def access_call(args: argparse.Namespace, client: Client) -> Any:
    """The API call of an access command; its answer (a list for list and audit)."""
    if args.group == "audit":
        return _audit(args, client)
    one = f"{ADMIN_KEYS}/{getattr(args, 'key_id', '')}"
    if args.action == "create":
        scope = {"organization": True} if args.organization else {"project_ids": args.projects}
        body = {"name": args.name, "scope": scope, "permissions": args.permissions}
        return client.call("POST", ADMIN_KEYS, json=body)
    if args.action == "list":
        return client.every(ADMIN_KEYS, {})
    method, path = {"get": ("GET", one), "rotate": ("POST", f"{one}/rotate")}.get(
        args.action, ("DELETE", one)
    )
    return client.call(method, path)


def _audit(args: argparse.Namespace, client: Client) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "project_ids[]": args.project,
        "event_types[]": args.type,
        "actor_ids[]": args.actor,
        "resource_ids[]": args.resource,
    }
    if args.since is not None:
        params["effective_at[gte]"] = str(args.since)
    if args.until is not None:
        params["effective_at[lte]"] = str(args.until)
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while len(entries) < args.limit:
        page = client.call(
            "GET",
            AUDIT_LOGS,
            params=params
            | {"limit": str(min(100, args.limit - len(entries)))}
            | ({"after": after} if after else {}),
        )
        entries.extend(page["data"])
        if not page["has_more"]:
            break
        after = page["last_id"]
    return entries


def show_access(
    args: argparse.Namespace,
    answer: Any,
    out: TextIO,
    err: TextIO,
    table: Callable[[list[list[str]], TextIO], None],
) -> None:
    """Print an access command's answer for people (the secret alone on stdout)."""
    if args.group == "audit":
        rows = [
            [
                _when(e["effective_at"]),
                e["type"],
                e["actor"]["id"],
                e["project_id"] or "-",
                e["resource_id"],
                _changes(e["changes"]),
            ]
            for e in answer
        ]
        table([["TIME", "TYPE", "ACTOR", "PROJECT", "RESOURCE", "CHANGES"], *rows], out)
    elif args.action in ("create", "rotate"):
        verb = "Created" if args.action == "create" else "Rotated"
        err.write(f"{verb} admin key {answer['id']} ({answer['name']}).\n")
        err.write("Copy the secret now: it is not stored and will not be shown again.\n")
        out.write(answer["value"] + "\n")
    elif args.action == "revoke":
        out.write(f"Revoked admin key {answer['id']}.\n")
    else:
        keys = answer if isinstance(answer, list) else [answer]
        rows = [
            [
                k["id"],
                k["name"],
                k["redacted_value"],
                k["status"],
                "organization"
                if k["scope"].get("organization")
                else ",".join(k["scope"]["project_ids"]),
                ",".join(k["permissions"]),
                _when(k["last_used_at"]),
            ]
            for k in keys
        ]
        header = ["ID", "NAME", "KEY", "STATUS", "SCOPE", "PERMISSIONS", "LAST USED"]
        table([header, *rows], out)


def shows_secret(args: argparse.Namespace) -> bool:
    return args.group == "admin-keys" and args.action in ("create", "rotate")


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _changes(changes: dict[str, Any]) -> str:
    text = json.dumps(changes, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _CHANGES_WIDTH else text[: _CHANGES_WIDTH - 3] + "..."
