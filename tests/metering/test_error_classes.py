"""Which database errors may be a record's fault (pure logic): only classes 22, 23 and 54."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as pg_base

from shared.exactly_once.retry import RETRYABLE, describe, record_error

pytestmark = pytest.mark.unit  # no server: `make test-unit`


def test_data_integrity_and_limit_errors_are_dead_letter_candidates() -> None:
    for exc in (
        asyncpg.CharacterNotInRepertoireError("NUL"),  # 22021
        asyncpg.InvalidTextRepresentationError("bad int"),  # 22P02
        asyncpg.NumericValueOutOfRangeError("overflow"),  # 22003
        asyncpg.CheckViolationError("check"),  # 23514
        asyncpg.ProgramLimitExceededError("index row too large"),  # 54000
        pg_base.DataError("invalid input for query argument $1"),  # asyncpg, client side
    ):
        assert record_error(exc), exc


def test_no_record_causes_the_others() -> None:
    for exc in (
        asyncpg.UndefinedTableError("gone"),  # 42P01
        asyncpg.InsufficientPrivilegeError("denied"),  # 42501
        asyncpg.SerializationError("retry"),  # 40001
        asyncpg.DeadlockDetectedError("retry"),  # 40P01
        asyncpg.AdminShutdownError("shutdown"),  # 57P01
        asyncpg.TooManyConnectionsError("full"),  # 53300
        asyncpg.ConnectionDoesNotExistError("lost"),  # 08003
        asyncpg.InterfaceError("closed"),
        OSError("refused"),
    ):
        assert not record_error(exc), exc
    assert isinstance(asyncpg.AdminShutdownError("x"), RETRYABLE)


def test_the_description_names_the_sqlstate_and_is_bounded() -> None:
    text = describe(asyncpg.CharacterNotInRepertoireError("x" * 5000))
    assert text.startswith("22021 CharacterNotInRepertoireError: xxx")
    assert len(text) == 500
