"""Fixtures of the tests on the secured engines."""

from __future__ import annotations

import pytest

from deploy.secure import SecureEngines, SecurePorts
from deploy.stack import DEFAULT_RUN_DIR


@pytest.fixture(scope="session")
def engines() -> SecureEngines:
    """The secured engines of the run folder, started when they do not run (and left
    running, as the plain stack is: `make down-secure` stops them)."""
    found = SecureEngines(DEFAULT_RUN_DIR, SecurePorts.from_env())
    found.up()
    return found
