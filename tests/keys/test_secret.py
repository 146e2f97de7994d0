"""The secret is never stored, logged or published: searched for in logs, topic and database."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from services.keys import repository
from services.keys.settings import KeysSettings
from shared import apikeys
from tests.keys.harness import by_key, dump, read_topic, running
from tests.polling import eventually


class Capture(logging.Handler):
    """Every record as raw text (before any redaction), and as the service formats it."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.service_formatter = formatter

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())
        self.texts.append(repr(vars(record)))
        if self.service_formatter is not None:
            self.texts.append(self.service_formatter.format(record))


async def test_the_secret_is_nowhere_but_in_the_create_and_rotate_answers(
    keys_settings: KeysSettings, db: asyncpg.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = keys_settings.model_copy(update={"log_level": "DEBUG"})
    async with running(settings) as keys:
        root = logging.getLogger()
        capture = Capture(root.handlers[0].formatter if root.handlers else None)
        root.addHandler(capture)
        try:
            project = await keys.project()
            created = await keys.key(project, "secret-test")
            base = f"/v1/projects/{project}/keys/{created['id']}"
            rotated = (
                await keys.client.post(f"{base}/rotate", json={"grace_period_seconds": 600})
            ).json()
            secrets = [created["key"], rotated["key"]]
            # Use: the gateway's verify (by hash), and a client key presented where it is no good.
            for secret in secrets:
                assert (await keys.verify(apikeys.hash_key(secret))).status_code == 200
                wrong = await keys.client.get(
                    "/v1/projects", headers={"Authorization": f"Bearer {secret}"}
                )
                assert wrong.status_code == 401
                assert secret not in wrong.text
            await keys.client.patch(base, json={"name": "renamed"})
            await keys.client.delete(base)
            await eventually(lambda: repository.outbox_backlog(db), until=lambda n: n == 0)
            records = await read_topic(settings.kafka_bootstrap, settings.keys_topic, 4)
            rows = await dump(db, settings.db_schema)
        finally:
            root.removeHandler(capture)
    out, err = capfd.readouterr()

    assert len(by_key(records)[created["id"]]) == 4
    assert any("key created" in text for text in capture.texts)  # the capture did see logs
    assert any(apikeys.hash_key(secrets[1]) in "".join(r) for r in rows.values())  # a real dump
    haystacks = {
        "logs": "\n".join(capture.texts) + out + err,
        "topic": "\n".join(r.key.decode() + r.value.decode() for r in records),
        "database": "\n".join(row for table in rows.values() for row in table),
    }
    for secret in secrets:
        random_part = secret[len(apikeys.PREFIX) : -apikeys.CHECKSUM_CHARS]
        for where, text in haystacks.items():
            assert secret not in text, where
            assert random_part not in text, where
            assert random_part[:16] not in text, where
