"""The model catalogue: prices by effective date, decimals only, env references expanded."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.catalogue import expand_env, load_catalogue

pytestmark = pytest.mark.unit  # no server: `make test-unit`

CATALOGUE = """
models:
  - id: m1
    upstream: {base_url: "${TEST_UPSTREAM_URL:-http://127.0.0.1:1/v1}"}
    prices:
      - {effective_from: "2026-06-01T00:00:00Z", input_per_million: "0.20",
         output_per_million: "0.80"}
      - {effective_from: "2026-01-01T00:00:00Z", input_per_million: "0.150",
         output_per_million: "0.600"}
"""


def test_price_in_force_at_a_moment(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(CATALOGUE)
    model = load_catalogue(tmp_path / "models.yaml").get("m1")
    assert model is not None
    assert model.price_at(datetime(2025, 12, 31, tzinfo=UTC)) is None
    early = model.price_at(datetime(2026, 5, 31, 23, 59, tzinfo=UTC))
    late = model.price_at(datetime(2026, 6, 1, tzinfo=UTC))
    assert early is not None
    assert early.input_per_million == Decimal("0.150")
    assert late is not None
    assert late.output_per_million == Decimal("0.80")
    assert model.upstream.base_url == "http://127.0.0.1:1/v1"


def test_env_reference_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_URL", "http://upstream:8090/v1")
    assert expand_env("${TEST_UPSTREAM_URL:-x}") == "http://upstream:8090/v1"
    monkeypatch.delenv("TEST_UPSTREAM_URL")
    with pytest.raises(ValueError, match="TEST_UPSTREAM_URL"):
        expand_env("${TEST_UPSTREAM_URL}")


def test_float_prices_are_refused(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(CATALOGUE.replace('"0.20"', "0.20"))
    with pytest.raises(ValidationError, match="strings"):
        load_catalogue(tmp_path / "models.yaml")


def test_demo_catalogue_loads() -> None:
    catalogue = load_catalogue(Path(__file__).parents[2] / "deploy" / "models.yaml")
    assert catalogue.models
    assert all(m.prices for m in catalogue.models)
