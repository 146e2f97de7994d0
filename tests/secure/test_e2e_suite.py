"""The end-to-end suite of tests/e2e, run as it is on the secured engines (TLS and SASL to
Kafka, TLS and ACL users to Redis, verify-full to PostgreSQL, each service with its own
credentials): the openai SDK 1.x, Daft's prompt and embed_text, the usage and costs exactly what
the clients were told."""

from __future__ import annotations

import pytest

from tests.e2e.test_daft import test_daft_prompt_and_embed_text_through_the_gateway
from tests.e2e.test_openai1 import test_openai_sdk_1x_through_the_gateway
from tests.e2e.test_pipeline import test_usage_and_costs_equal_what_clients_were_told

pytestmark = [pytest.mark.secure, pytest.mark.slow]

__all__ = [
    "test_daft_prompt_and_embed_text_through_the_gateway",
    "test_openai_sdk_1x_through_the_gateway",
    "test_usage_and_costs_equal_what_clients_were_told",
]
