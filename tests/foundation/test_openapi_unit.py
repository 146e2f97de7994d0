"""The documents' constraints held to the validators they describe, and the documents' shape,
with no server (the served documents meet schemathesis in test_openapi_contract.py)."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, TypeAdapter, ValidationError

from services.billing.main import create_app as create_billing
from services.billing.settings import BillingSettings
from services.keys.fields import BEFORE_YEAR_9999, USD_AMOUNT, Name
from services.keys.main import create_app as create_keys
from services.keys.schemas import CreateKey
from services.metering.main import create_app as create_metering
from services.metering.settings import MeteringSettings
from shared.errors import error_body
from shared.events import free_text
from shared.openapi import NO_NUL, NOT_BLANK_FREE_TEXT, ErrorResponse
from shared.policy import parse_usd
from tests.keys.harness import make_settings
from tests.metering.harness import CATALOGUE_YAML

pytestmark = pytest.mark.unit  # no server: `make test-unit`

TOKENS = {"admin_token": "unit-operator-token-0123456789", "internal_token": SecretStr("i" * 32)}


def matches(pattern: str) -> Any:
    """The pattern as a JSON Schema validator reads it (ECMA 262: ``$`` is the end)."""
    return jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid


def _accepted(text: str) -> bool:
    try:
        free_text(text)
    except ValueError:
        return False
    return bool(text.strip())


def test_the_name_pattern_is_what_names_are_refused_for() -> None:
    valid = matches(NOT_BLANK_FREE_TEXT)
    # Every character but the surrogates, which no UTF-8 document carries.
    for code in (*range(0xD800), *range(0xE000, sys.maxunicode + 1, 7)):
        c = chr(code)
        assert valid(c) == _accepted(c), hex(code)
    for text in ("a\n", "\na", " a ", "   ", "", "a\x7fb", "\u00a0", "x\u00a0", "名前"):
        assert valid(text) == _accepted(text), repr(text)
    names = TypeAdapter(Name)
    for text in (" a ", "\u2003", "ok\u0085"):
        try:
            names.validate_python(text)
            taken = True
        except ValidationError:
            taken = False
        assert taken == valid(text), repr(text)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.from_regex(USD_AMOUNT.removeprefix("^").removesuffix("$"), fullmatch=True))
def test_every_amount_the_pattern_allows_is_taken(text: str) -> None:
    assert matches(USD_AMOUNT)(text)
    assert parse_usd(text) == Decimal(text)


def test_the_amount_pattern_refuses_what_parse_usd_refuses() -> None:
    allowed = matches(USD_AMOUNT)
    for text in ("25.00", "0.000001", ".5", "1000000000", "1000000000.000000", "999999999.999999"):
        assert allowed(text), text
        parse_usd(text)
    for text in ("0", "0.0", "0.0000001", "-1", "1000000000.000001", "1000000001", "1e3", " 5"):
        assert not allowed(text), text
    for text in ("0", "0.0000001", "-1", "1000000000.000001", "1000000001"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_usd(text)


def test_dates_and_ids() -> None:
    before_9999 = matches(BEFORE_YEAR_9999)
    assert before_9999("0001-01-01T00:00:00Z")
    assert before_9999("9998-12-31T23:59:59Z")
    assert not before_9999("9999-01-01T00:00:00Z")
    assert not before_9999("0000-01-01T00:00:00Z")
    assert matches(NO_NUL)("proj_a b")
    assert not matches(NO_NUL)("proj_a\x00")
    # Past 9999 in UTC is a 400 (it was a 500: Python cannot hold it in UTC).
    with pytest.raises(ValidationError):
        CreateKey.model_validate({"name": "a", "expires_at": "9999-12-31T23:59:59-01:00"})
    # 600.0 is the integer 600 (JSON Schema's integer); true and "600" are still refused.
    assert (
        CreateKey.model_validate(
            {"name": "a", "rate_limits": {"requests_per_minute": 600.0}}
        ).rate_limits
        == CreateKey.model_validate(
            {"name": "a", "rate_limits": {"requests_per_minute": 600}}
        ).rate_limits
    )
    for bad in (True, "600", 1.5):
        with pytest.raises(ValidationError):
            CreateKey.model_validate({"name": "a", "rate_limits": {"requests_per_minute": bad}})


def test_the_error_schema_is_the_error_body() -> None:
    ErrorResponse.model_validate(error_body("No such key.", "invalid_request_error", "x", "y"))
    ErrorResponse.model_validate(error_body("Oops.", "server_error"))


def _apps(tmp_path: Path) -> dict[str, FastAPI]:
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(CATALOGUE_YAML)
    keys = make_settings(
        kafka="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x", schema="s", prefix="p",
        group="g",
    )  # fmt: skip
    common: dict[str, Any] = {"database_url": "postgresql://x@127.0.0.1:1/x", **TOKENS}
    return {
        "keys": create_keys(keys),
        "metering": create_metering(MeteringSettings(**common)),
        "billing": create_billing(BillingSettings(catalogue_path=catalogue, **common)),
    }


def test_every_operation_documents_its_errors_and_its_credential(tmp_path: Path) -> None:
    for name, app in _apps(tmp_path).items():
        doc = app.openapi()
        assert "HTTPValidationError" not in doc["components"]["schemas"], name
        error = {"$ref": "#/components/schemas/ErrorResponse"}
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                where = f"{name}: {method.upper()} {path}"
                answers = operation["responses"]
                assert "422" not in answers, where  # validation errors are 400 here
                assert "401" in answers, where
                assert operation["security"] in ([{"operator": []}], [{"internal": []}]), where
                if not path.startswith("/internal/"):
                    assert "403" in answers, where
                if "{" in path and not path.startswith("/internal/"):
                    assert "404" in answers, where
                if operation.get("parameters") or operation.get("requestBody"):
                    assert "400" in answers, where
                params = operation.get("parameters", [])
                assert all(p["name"] != "authorization" for p in params), where
                for status, answer in answers.items():
                    if status.startswith(("4", "5")):
                        schema = answer["content"]["application/json"]["schema"]
                        assert schema == error, (where, status)
