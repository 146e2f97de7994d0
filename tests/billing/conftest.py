"""Fixtures of the metering and billing tests (shared through tests.metering.harness)."""

from tests.metering.harness import case, catalogue_path, schemas

__all__ = ["case", "catalogue_path", "schemas"]
