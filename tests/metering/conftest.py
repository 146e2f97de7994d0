"""Fixtures of the metering and billing tests (shared through tests.metering.harness)."""

from tests.metering.harness import catalogue_path, schemas
from tests.metering.ledgers import case

__all__ = ["case", "catalogue_path", "schemas"]
