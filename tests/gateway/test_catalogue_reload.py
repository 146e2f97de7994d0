"""The catalogue read again on a change of its file or on SIGHUP (no servers)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from services.gateway.upstream.reload import CatalogueWatch
from services.gateway.upstream.sighup import Reloads
from shared.catalogue import Catalogue

pytestmark = pytest.mark.unit  # no server: `make test-unit`

ONE = """models:
  - id: m
    upstream: {base_url: "http://10.0.0.1:8000/v1"}
"""
TWO = """models:
  - id: m
    upstream:
      endpoints: [{base_url: "http://10.0.0.1:8000/v1"}, {base_url: "http://10.0.0.2:8000/v1"}]
"""


def watch(tmp_path: Path, text: str = ONE) -> tuple[CatalogueWatch, list[Catalogue]]:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    applied: list[Catalogue] = []
    return CatalogueWatch(path, applied.append, poll_s=0.05), applied


def test_a_changed_file_is_applied(tmp_path: Path) -> None:
    watcher, applied = watch(tmp_path)
    assert not watcher.look()
    watcher.path.write_text(TWO)
    assert watcher.look()
    assert len(applied[0].models[0].upstream.endpoints) == 2
    assert not watcher.look()  # once


def test_a_file_touched_but_not_changed_is_not_reloaded(tmp_path: Path) -> None:
    watcher, applied = watch(tmp_path)
    os.utime(watcher.path, ns=(1, 1))
    assert not watcher.look()
    assert applied == []


@pytest.mark.parametrize(
    "broken",
    [
        "models: [",  # YAML
        "models:\n  - id: m\n    upstream: {}\n",  # no form
        "models:\n  - id: m\n    upstream: {base_url: '${FLEET_TEST_UNSET_VARIABLE}'}\n",
        "",  # empty
    ],
)
def test_a_catalogue_that_does_not_load_changes_nothing(
    tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, applied = watch(tmp_path)
    watcher.path.write_text(broken)
    with caplog.at_level(logging.ERROR):
        assert not watcher.look()
    assert applied == []
    assert watcher.failures == 1
    assert "was not reloaded (the gateway keeps the one it has)" in caplog.text
    watcher.path.write_text(TWO)  # fixed: applied
    assert watcher.look()


def test_a_removed_file_changes_nothing(tmp_path: Path) -> None:
    watcher, applied = watch(tmp_path)
    watcher.path.unlink()
    assert not watcher.look()
    assert applied == []


async def test_run_reloads_on_change_and_on_request(tmp_path: Path) -> None:
    watcher, applied = watch(tmp_path)
    task = asyncio.create_task(watcher.run())
    try:
        watcher.path.write_text(TWO)
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.02)
        assert len(applied) == 1
        watcher.request()  # SIGHUP: reloaded although the file is the same
        for _ in range(100):
            if len(applied) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(applied) == 2
    finally:
        task.cancel()


async def test_sighup_asks_every_registered_gateway() -> None:
    asked: list[str] = []
    reloads = Reloads()
    reloads.add(lambda: asked.append("a"))
    reloads.add(lambda: asked.append("b"))
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if len(asked) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(asked) == ["a", "b"]
    finally:
        for request in list(reloads._requests):
            reloads.discard(request)
    assert reloads._loop is None  # the handler went with the last one
