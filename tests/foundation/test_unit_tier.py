"""The quick tier's guard: a `unit` test that requests a server fixture stops the run."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import SERVER_FIXTURES, unit_tests_on_servers

pytestmark = pytest.mark.unit  # no server: `make test-unit`

TESTS = Path(__file__).resolve().parents[1]


@dataclass
class StandIn:
    """What the guard reads of a collected test."""

    nodeid: str
    fixturenames: list[str]
    marks: list[str] = field(default_factory=list)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return getattr(pytest.mark, name).mark if name in self.marks else None


def test_a_unit_test_requesting_a_server_fixture_is_named_with_it() -> None:
    items = [
        StandIn("a.py::pure", ["tmp_path"], ["unit"]),
        StandIn("a.py::on_redis", ["tmp_path", "redis_prefix", "redis_client"], ["unit"]),
        StandIn("a.py::integration", ["endpoints", "topic_prefix"]),
    ]
    found = unit_tests_on_servers(cast(list[pytest.Item], items))
    assert found == ["a.py::on_redis requests redis_client, redis_prefix"]


def _fixtures_defined_under_tests() -> set[str]:
    names = set()
    for path in TESTS.rglob("*.py"):
        if any(part.startswith(".") for part in path.relative_to(TESTS).parts):
            continue  # the client venvs under tests/clients/
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "fixture" in ast.unparse(d) for d in node.decorator_list
            ):
                names.add(node.name)
    return names


def test_every_server_fixture_the_guard_names_exists() -> None:
    """A renamed fixture would drop out of the guard without a word."""
    assert _fixtures_defined_under_tests() >= SERVER_FIXTURES
