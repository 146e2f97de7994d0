"""The bus's documents: every event field described, and docs/ as ``make docs`` writes it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from deploy import docs
from services.billing.settings import BillingSettings
from services.keys.settings import KeysSettings
from services.metering.settings import MeteringSettings
from shared import bus_spec
from shared.events import DeadLetter, Event, KeyEvent, KeyState, UsageRecorded
from shared.policy import Budget, ProjectPolicy, RateLimits
from shared.topics import TOPICS

pytestmark = pytest.mark.unit  # no server: `make test-unit`

MODELS: tuple[type[BaseModel], ...] = (
    Event,
    KeyState,
    KeyEvent,
    UsageRecorded,
    DeadLetter,
    RateLimits,
    Budget,
    ProjectPolicy,
)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__name__}: Field(description=...) missing on {missing}"


def test_every_property_in_the_document_has_a_description() -> None:
    schemas: dict[str, Any] = bus_spec.document()["components"]["schemas"]
    assert {"KeyEvent", "UsageRecorded", "DeadLetter", "RateLimits", "Budget"} <= set(schemas)
    missing = [
        f"{name}.{prop}"
        for name, schema in schemas.items()
        for prop, body in schema["properties"].items()
        if not body.get("description")
    ]
    assert not missing, f"undescribed in docs/asyncapi.json: {missing}"


def test_committed_docs_are_current() -> None:
    stale = [
        str(path.relative_to(docs.DOCS.parent))
        for path, text in docs.render().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"{', '.join(stale)} stale: run `make docs` and commit the result"


def test_document_states_each_topic_as_created() -> None:
    doc = bus_spec.document()
    for spec in TOPICS:
        channels = {n: c for n, c in doc["channels"].items() if c["address"] == spec.name}
        assert channels, f"{spec.name} is not in the document"
        for channel in channels.values():
            kafka = channel["bindings"]["kafka"]
            assert kafka["partitions"] == spec.partitions
            assert channel["x-kafka-topic-configs"] == spec.configs
            assert kafka["topicConfiguration"]["cleanup.policy"] == [spec.configs["cleanup.policy"]]
        actions = {
            op["action"]
            for op in doc["operations"].values()
            if op["channel"]["$ref"].rsplit("/", 1)[1] in channels
        }
        assert "send" in actions, f"nobody publishes {spec.name} in the document"


def test_consumer_groups_are_the_services_defaults() -> None:
    defaults = {
        "usage.events.metering": MeteringSettings.model_fields["consumer_group"].default,
        "usage.events.billing": BillingSettings.model_fields["consumer_group"].default,
        "usage.events.keys-last-used": KeysSettings.model_fields["consumer_group"].default,
    }
    assert defaults == bus_spec.GROUPS
    operations = bus_spec.document()["operations"]
    for title, group in defaults.items():
        assert operations[title]["bindings"]["kafka"]["groupId"]["enum"] == [group]
