"""What the Audit log page asks for and shows: its filters as the key service's query, and
each entry's actor and changes in a few words.

The filters are the page's form (one event type, project, actor id, resource id, UTC dates
both included) and become ``GET /v1/organization/audit_logs``'s query (``event_types[]``,
``project_ids[]``, ``actor_ids[]``, ``resource_ids[]``, ``effective_at[gte]``/``[lte]``,
``after``); a filter that could not be read is left out and said so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from shared.events import AUDIT_EVENT_TYPES

PAGE_SIZE = 50
ID_MAX = 128
VALUE_MAX = 48  # characters of one value in a summary
SHOWN_CHANGES = 4  # fields of one entry's summary; the rest are counted
_MISSING = object()


@dataclass
class AuditFilters:
    """The page's filters as given, and what could not be read of them."""

    type: str = ""
    project: str = ""
    actor: str = ""
    resource: str = ""
    start: str = ""
    end: str = ""
    after: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("type", "project", "actor", "resource", "start", "end", "after"):
            setattr(self, name, str(getattr(self, name)).strip())
        if self.type and self.type not in AUDIT_EVENT_TYPES:
            self.errors["type"] = f"'{self.type[:64]}' is not an event type."
            self.type = ""
        for name in ("project", "actor", "resource", "after"):
            if len(getattr(self, name)) > ID_MAX:
                self.errors[name] = f"An id has at most {ID_MAX} characters."
                setattr(self, name, "")
        for name in ("start", "end"):
            if getattr(self, name) and _day(getattr(self, name)) is None:
                self.errors[name] = "A date is YYYY-MM-DD."
                setattr(self, name, "")
        first, last = _day(self.start), _day(self.end)
        if first and last and first > last:
            self.errors["end"] = "The end date is before the start date."
            self.end = ""

    @property
    def query(self) -> list[tuple[str, str]]:
        """The key service's query for one page of entries with these filters."""
        out: list[tuple[str, str]] = [("limit", str(PAGE_SIZE))]
        for value, name in (
            (self.type, "event_types[]"),
            (self.project, "project_ids[]"),
            (self.actor, "actor_ids[]"),
            (self.resource, "resource_ids[]"),
        ):
            if value:
                out.append((name, value))
        first, last = _day(self.start), _day(self.end)
        if first:
            out.append(("effective_at[gte]", str(_seconds(first, time.min))))
        if last:  # [lte] takes the whole second given: the day's last one is in
            out.append(("effective_at[lte]", str(_seconds(last, time(23, 59, 59)))))
        if self.after:
            out.append(("after", self.after))
        return out

    def link(self, **changes: str) -> dict[str, str]:
        """The page's query with these filters, changed as given, empty ones left out."""
        values = {
            "type": self.type,
            "project": self.project,
            "actor": self.actor,
            "resource": self.resource,
            "start": self.start,
            "end": self.end,
            **changes,
        }
        return {name: value for name, value in values.items() if value}

    @property
    def any(self) -> bool:
        """True when some filter is set (the after cursor aside)."""
        return bool(self.link())


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _seconds(day: date, moment: time) -> int:
    return int(datetime.combine(day, moment, tzinfo=UTC).timestamp())


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


def change_lines(changes: Any) -> list[str]:
    """An entry's changes as lines: ``name: before → after``, ``name: value`` for what was
    created, ``name was value`` for what was deleted; fields that did not change left out, and
    so are the empty ones of what was created or deleted (``budget: null`` says nothing)."""
    if not isinstance(changes, Mapping):
        return []
    before, after = changes.get("before"), changes.get("after")
    old = before if isinstance(before, Mapping) else {}
    new = after if isinstance(after, Mapping) else {}
    lines = []
    for name in dict.fromkeys([*old, *new]):
        was, now = old.get(name, _MISSING), new.get(name, _MISSING)
        if was == now or (was is _MISSING and now is None) or (now is _MISSING and was is None):
            continue
        if was is _MISSING:
            lines.append(f"{name}: {_value(now)}")
        elif now is _MISSING:
            lines.append(f"{name} was {_value(was)}")
        else:
            lines.append(f"{name}: {_value(was)} → {_value(now)}")
    return lines


def change_summary(changes: Any) -> tuple[str, str]:
    """An entry's changes compactly, and in full (the cell's title)."""
    lines = change_lines(changes)
    shown = "; ".join(lines[:SHOWN_CHANGES])
    if len(lines) > SHOWN_CHANGES:
        shown += f"; +{len(lines) - SHOWN_CHANGES} more"
    full = json.dumps(changes, default=str, indent=1) if changes else ""
    return shown, full


def actor_words(actor: Any) -> str:
    """Who an entry's actor is: ``operator``, an admin key's id and hint, or the console
    session a sign-in was (``console sign-in as ...``)."""
    if not isinstance(actor, Mapping):
        return "unknown"
    kind, ident, hint = actor.get("type"), str(actor.get("id") or ""), actor.get("hint")
    who = "operator" if ident == "root" else ident
    if hint:
        who += f" ({hint})"
    if kind == "console_session":
        return f"console sign-in as {who}" if ident != "anonymous" else "console sign-in, unknown"
    return who
