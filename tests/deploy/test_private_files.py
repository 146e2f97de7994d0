"""Files with secrets in the run folder (stack.env's database password, tokens, the keyring)
are the owner's only, from the instant they exist."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from deploy.private import write_private
from deploy.services import token
from deploy.stack import DEFAULT_RUN_DIR, Endpoints
from shared.state_mac import Keyring, new_keyring_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stack_env_is_readable_by_its_owner_only(endpoints: Endpoints) -> None:
    # The session's servers were started by Stack().up(), which writes it.
    path = DEFAULT_RUN_DIR / "stack.env"
    if not path.exists():  # the servers came from elsewhere (containers): nothing written
        return
    assert _mode(path) == 0o600
    assert "DATABASE_URL" in path.read_text() or path.read_text()


@pytest.mark.unit
def test_written_private_whatever_the_umask_and_the_file_before(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("old\n")
    path.chmod(0o644)  # as it was written before
    before = os.umask(0)
    try:
        write_private(path, "TOLLGATE_DATABASE_URL=postgresql://u:pw@h/db\n")
        fresh = tmp_path / "fresh"
        write_private(fresh, "x")
    finally:
        os.umask(before)
    assert _mode(path) == 0o600
    assert _mode(fresh) == 0o600
    assert path.read_text() == "TOLLGATE_DATABASE_URL=postgresql://u:pw@h/db\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "stack.env"], "no leftovers"


@pytest.mark.unit
def test_generated_tokens_and_keyring_are_private(tmp_path: Path) -> None:
    unset = "TOLLGATE_TEST_UNSET_VARIABLE"
    assert unset not in os.environ
    before = os.umask(0)
    try:
        keyring = token(tmp_path, "state-mac-keys", unset, new=new_keyring_text)
        again = token(tmp_path, "state-mac-keys", unset, new=new_keyring_text)
        token(tmp_path, "admin-token", unset)
    finally:
        os.umask(before)
    assert keyring == again, "generated once"
    Keyring.parse(SecretStr(keyring), "TOLLGATE_STATE_MAC_KEYS")  # one the services accept
    for name in ("state-mac-keys", "admin-token"):
        assert _mode(tmp_path / name) == 0o600
