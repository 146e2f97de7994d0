"""Fixtures of the metering and billing tests (shared through tests.metering.harness)."""

from tests.metering.harness import catalogue_path, schemas

__all__ = ["catalogue_path", "schemas"]
