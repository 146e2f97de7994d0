"""Every repository path the READMEs name exists: a moved or renamed file fails here, not in
a newcomer's hands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no server: `make test-unit`

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", *sorted(ROOT.glob("services/*/README.md"))]
TOP_FOLDERS = tuple(p.name + "/" for p in ROOT.iterdir() if p.is_dir() and p.name[0] != ".")
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".sql")
# Written at run time, not kept in the repository.
GENERATED = (".run/",)

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


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


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_readme_names_exists(readme: Path) -> None:
    missing = sorted(p for p in named_paths(readme) if not _exists(p, readme))
    assert not missing, f"{readme.relative_to(ROOT)} names paths that are not in the repo"


def test_the_readmes_name_paths_at_all() -> None:
    """The pattern still finds the paths the README is known to name."""
    named = named_paths(ROOT / "README.md")
    assert {"tests/private_servers.py", "tests/conftest.py", "shared/ledger/"} <= named
