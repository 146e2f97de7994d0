"""The ``tollgate`` command line against the key service served over real HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from deploy.ports import free_port
from services.keys import cli
from services.keys.main import create_app
from services.keys.settings import KeysSettings
from shared import apikeys
from tests.keys.harness import ADMIN_TOKEN, INTERNAL_TOKEN


@pytest.fixture
async def url(keys_settings: KeysSettings) -> AsyncIterator[str]:
    """The key service on a free port of 127.0.0.1."""
    port = free_port()
    config = uvicorn.Config(
        create_app(keys_settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def tollgate(
    *argv: str, env: dict[str, str] | None = None, status: int = 0
) -> tuple[str, str]:
    """Run the CLI in a thread (it is synchronous); its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    environ = {"TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN} if env is None else env
    code = await asyncio.to_thread(cli.run, list(argv), stdout=out, stderr=err, environ=environ)
    assert code == status, (argv, out.getvalue(), err.getvalue())
    return out.getvalue(), err.getvalue()


async def test_projects_and_keys_from_the_command_line(url: str) -> None:
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "CLI project")
    project = json.loads(out)["id"]
    out, _ = await tollgate("--url", url, "projects", "list")
    assert project in out
    assert "CLI project" in out

    out, err = await tollgate("--url", url, "keys", "create", "-p", project, "production-app")
    secret = out.strip()
    assert apikeys.is_well_formed(secret)
    assert "will not be shown again" in err
    out, _ = await tollgate("--url", url, "--json", "keys", "list", "-p", project)
    [first] = json.loads(out)
    assert first["hint"] == apikeys.hint(secret)
    assert "key" not in first

    out, _ = await tollgate("--url", url, "--json", "keys", "create", "-p", project, "second")
    second = json.loads(out)["id"]
    out, _ = await tollgate("--url", url, "keys", "default", "-p", project, second)
    assert "yes" in out
    out, _ = await tollgate("--url", url, "keys", "rename", "-p", project, second, "renamed")
    assert "renamed" in out
    out, err = await tollgate(
        "--url", url, "keys", "rotate", "-p", project, first["id"], "--grace", "60"
    )
    rotated = out.strip()
    assert apikeys.is_well_formed(rotated)
    assert rotated != secret
    assert "previous secret keeps working until" in err
    out, _ = await tollgate("--url", url, "keys", "revoke", "-p", project, first["id"])
    assert f"Revoked key {first['id']}." in out

    out, _ = await tollgate("--url", url, "keys", "list", "-p", project)
    assert first["id"] not in out
    assert second in out
    assert rotated not in out
    out, _ = await tollgate("--url", url, "keys", "list", "-p", project, "--all")
    assert first["id"] in out
    assert "revoked" in out


async def test_errors_are_told_with_their_status(url: str, tmp_path: Path) -> None:
    _, err = await tollgate("--url", url, "keys", "list", "-p", "proj_nope", status=1)
    assert "No project found" in err
    assert "404" in err
    _, err = await tollgate("--url", url, "projects", "create", " ", status=1)
    assert "name" in err
    _, err = await tollgate(
        "--url", url, "projects", "list", env={"TOLLGATE_ADMIN_TOKEN": INTERNAL_TOKEN}, status=1
    )
    assert "401" in err
    _, err = await tollgate(
        "--url", url, "projects", "list", env={"TOLLGATE_RUN_DIR": str(tmp_path)}, status=3
    )
    assert "no operator token" in err
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN + "\n")
    await tollgate("--url", url, "projects", "list", env={"TOLLGATE_RUN_DIR": str(tmp_path)})
    _, err = await tollgate("--url", "http://127.0.0.1:1", "projects", "list", status=3)
    assert "cannot reach" in err
    await tollgate("keys", "frobnicate", status=2)


MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


async def test_policy_flags_set_change_and_remove_limits(url: str) -> None:
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "limited")
    project = json.loads(out)["id"]
    out, _ = await tollgate(
        "--url", url, "--json", "keys", "create", "-p", project, "app",
        "--rpm", "600", "--tpm", "100000", "--budget", "25/month",
        "--models", f"{MODEL}, Qwen/Qwen3-Embedding-0.6B", "--endpoints", "chat.completions,models",
    )  # fmt: skip
    key = json.loads(out)
    assert apikeys.is_well_formed(key["key"])
    assert key["rate_limits"] == {"requests_per_minute": 600, "tokens_per_minute": 100_000}
    assert key["budget"] == {"limit_usd": "25", "period": "month"}
    assert key["allowed_models"] == [MODEL, "Qwen/Qwen3-Embedding-0.6B"]
    assert key["allowed_endpoints"] == ["chat.completions", "models"]

    async def update(*flags: str) -> dict[str, Any]:
        out, _ = await tollgate(
            "--url", url, "--json", "keys", "update", "-p", project, key["id"], *flags
        )
        answer: dict[str, Any] = json.loads(out)
        return answer

    # One half of the rate limits: the other half is kept.
    changed = await update("--rpm", "60")
    assert changed["rate_limits"] == {"requests_per_minute": 60, "tokens_per_minute": 100_000}
    changed = await update("--tpm", "none")
    assert changed["rate_limits"] == {"requests_per_minute": 60, "tokens_per_minute": None}
    changed = await update("--rpm", "none")
    assert changed["rate_limits"] is None
    changed = await update("--budget", "$2.50/day", "--models", MODEL, "--name", "app2")
    assert (changed["budget"], changed["allowed_models"], changed["name"]) == (
        {"limit_usd": "2.50", "period": "day"},
        [MODEL],
        "app2",
    )
    assert changed["allowed_endpoints"] == ["chat.completions", "models"]  # not given: kept
    changed = await update("--budget", "none", "--models", "none", "--endpoints", "NONE")
    assert [changed[f] for f in ("budget", "allowed_models", "allowed_endpoints")] == [None] * 3
    out, _ = await tollgate(
        "--url", url, "keys", "update", "-p", project, key["id"], "--rpm", "5", "--tpm", "7"
    )
    assert "rpm=5 tpm=7" in out  # the table's LIMITS column

    out, _ = await tollgate(
        "--url", url, "projects", "update", project, "--rpm", "1000", "--budget", "100/total"
    )
    assert "rpm=1000 budget=100/total" in out
    out, _ = await tollgate(
        "--url", url, "--json", "projects", "update", project, "--tpm", "50", "--name", "P2"
    )
    shown = json.loads(out)
    assert shown["name"] == "P2"
    assert shown["rate_limits"] == {"requests_per_minute": 1000, "tokens_per_minute": 50}
    out, _ = await tollgate(
        "--url", url, "--json", "projects", "update", project, "--budget", "none"
    )
    assert json.loads(out)["budget"] is None


async def test_bad_policy_flags_are_refused_before_any_call(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = await tollgate("--url", url, "--json", "projects", "create", "p")
    project = json.loads(out)["id"]
    create = ("--url", url, "keys", "create", "-p", project, "k")
    for flags, said in (
        (("--rpm", "0"), "must be at least 1"),
        (("--rpm", "fast"), "not a whole number"),
        (("--rpm", "none"), "not a whole number"),  # nothing to remove on create
        (("--tpm", "-3"), "must be at least 1"),
        (("--budget", "25"), "AMOUNT/PERIOD"),
        (("--budget", "25/week"), "AMOUNT/PERIOD"),
        (("--budget", "abc/month"), "not a decimal amount"),
        (("--budget", "0/day"), "more than 0"),
        (("--endpoints", "chat"), "unknown endpoint 'chat'"),
        (("--models", " , "), "at least one name"),
    ):
        capsys.readouterr()
        await tollgate(*create, *flags, status=2)
        assert said in capsys.readouterr().err, flags
    out, _ = await tollgate("--url", url, "--json", "keys", "list", "-p", project)
    assert json.loads(out) == []  # nothing was created
    # The API's own refusals (a model outside the catalogue) exit 1 with its message.
    _, err = await tollgate(*create, "--models", "gpt-9", status=1)
    assert "gpt-9" in err
    assert "model_not_found" in err
    _, err = await tollgate("--url", url, "projects", "update", project, status=2)
    assert "nothing to update" in err
    await tollgate("--url", url, "projects", "update", project, "--models", MODEL, status=2)
