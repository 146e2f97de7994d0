"""Every repository path the READMEs and the docs name exists, and the READMEs stay short.

A moved or renamed file fails here, not in a newcomer's hands. README.md opens with the map (a
Mermaid diagram), and it and each service's README stay under 300 lines: detail goes to
``docs/``, which this checks as it checks the READMEs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no server: `make test-unit`

ROOT = Path(__file__).resolve().parents[2]
SERVICE_READMES = sorted(ROOT.glob("services/*/README.md"))
READMES = [ROOT / "README.md", *SERVICE_READMES]
DOCS = sorted((ROOT / "docs").rglob("*.md"))
TOP_FOLDERS = tuple(p.name + "/" for p in ROOT.iterdir() if p.is_dir() and p.name[0] != ".")
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".sql")
# Written at run time, not kept in the repository.
GENERATED = (".run/",)
MAX_README_LINES = 300

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def _looks_like_path(text: str) -> bool:
    if " " in text or "://" in text or text.startswith(("-", "$")):
        return False
    return text.startswith(TOP_FOLDERS) or text.endswith(SUFFIXES)


def named_paths(readme: Path) -> set[str]:
    """The repository paths a README names: in backticks, as a link's target, or as the
    first column of its Layout section's block."""
    whole = readme.read_text()
    text = FENCE.sub("", whole)
    found = {c for c in CODE.findall(text) if _looks_like_path(c)}
    layout = whole.partition("\n## Layout\n")[2].partition("\n## ")[0]
    for block in FENCE.findall(layout):
        for line in block.splitlines()[1:-1]:
            first = line.split(" ", 1)[0]
            if _looks_like_path(first):
                found.add(first)
    for link in LINK.findall(text):
        target = link.split("#")[0]
        if target and ":" not in target:
            found.add(target)
    return found


def _exists(path: str, readme: Path) -> bool:
    if path.startswith(GENERATED):
        return True
    for base in (ROOT, readme.parent):
        if any(ch in path for ch in "*?[") and any(base.glob(path)):
            return True
        if (base / path).exists():
            return True
    return False


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a Markdown page has, from its headings (outside code blocks)."""
    return {anchor(h) for h in HEADING.findall(FENCE.sub("", page.read_text()))}


def broken_anchors(page: Path) -> list[str]:
    """Links of page to a heading of a Markdown page (itself or another) that has no such
    heading."""
    broken = []
    for link in LINK.findall(FENCE.sub("", page.read_text())):
        target, _, fragment = link.partition("#")
        if not fragment or ":" in target:
            continue
        linked = (page.parent / target).resolve() if target else page
        if linked.suffix == ".md" and linked.is_file() and fragment not in anchors(linked):
            broken.append(link)
    return broken


def where_is() -> list[tuple[str, list[str]]]:
    """The rows of README.md's "Where is X" table: each answer's path and the names after it."""
    text = (ROOT / "README.md").read_text()
    table = text.partition("\n## Where is X\n")[2].partition("\n## ")[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            path, *names = CODE.findall(cells[1])
            rows.append((path, names))
    return rows


def defines(module: Path, name: str) -> bool:
    """Whether module defines name: a function or class, or a class's method (``Cls.meth``)."""
    tree = ast.parse(module.read_text())
    *owner, leaf = name.split(".")
    scopes: list[ast.AST] = [tree]
    if owner:
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner[-1]]
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(
        isinstance(n, defs) and n.name == leaf
        for scope in scopes
        for n in ast.iter_child_nodes(scope)
    )


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", READMES + DOCS, ids=_id)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(p for p in named_paths(page) if not _exists(p, page))
    assert not missing, f"{_id(page)} names paths that are not in the repo"


@pytest.mark.parametrize("page", READMES + DOCS, ids=_id)
def test_every_link_to_a_heading_finds_it(page: Path) -> None:
    assert not broken_anchors(page), f"{_id(page)} links to headings that are not there"


@pytest.mark.parametrize("readme", READMES, ids=_id)
def test_a_readme_stays_under_300_lines(readme: Path) -> None:
    lines = len(readme.read_text().splitlines())
    assert lines < MAX_README_LINES, f"{_id(readme)}: {lines} lines; move detail to docs/"


def test_the_readme_opens_with_the_map() -> None:
    """One Mermaid diagram, before the first section after the two commands."""
    text = (ROOT / "README.md").read_text()
    assert text.count("```mermaid\n") == 1
    assert text.index("## The two commands") < text.index("```mermaid\n")
    assert text.index("```mermaid\n") < text.index("## Where is X")


def test_where_is_x_answers_with_one_path_and_names_it_defines() -> None:
    """Each answer is one existing path; a function or class named beside it is defined there,
    so a rename fails here as a moved file does."""
    rows = where_is()
    assert len(rows) >= 20
    wrong = [
        (path, name)
        for path, names in rows
        for name in names
        if not (ROOT / path).is_file() or not defines(ROOT / path, name)
    ]
    assert not wrong, "README.md's Where is X names what its paths do not define"


def test_every_service_has_a_readme() -> None:
    services = sorted(p.parent for p in ROOT.glob("services/*/__init__.py"))
    assert [p.parent for p in SERVICE_READMES] == services


def test_the_readmes_name_paths_at_all() -> None:
    """The pattern still finds the paths the README is known to name."""
    named = named_paths(ROOT / "README.md")
    assert {"shared/topics.py", "services/gateway/keys/auth.py", "shared/exactly_once/"} <= named
    assert {"docs/operations.md", "docs/reliability.md"} <= named


def test_anchors_are_made_as_github_makes_them() -> None:
    assert anchor("Access: the operator token, admin keys, the audit log") == (
        "access-the-operator-token-admin-keys-the-audit-log"
    )
    assert anchor("The gateway's protocol and how it is run") == (
        "the-gateways-protocol-and-how-it-is-run"
    )
    assert anchor("Settings (`TOLLGATE_GATEWAY_*`)") == "settings-tollgate_gateway_"
