"""The key service's /readyz shows its background workers' lifecycle (shared/worker.py)."""

from __future__ import annotations

from typing import Any

from services.keys.settings import KeysSettings
from tests.keys.harness import Running, running


async def _workers(keys: Running) -> dict[str, Any]:
    body: dict[str, Any] = (await keys.client.get("/readyz")).json()
    return dict(body["workers"])


async def test_readyz_shows_the_relay_and_the_consumer(keys_settings: KeysSettings) -> None:
    settings = keys_settings.model_copy(update={"consume_usage": True})
    async with running(settings) as keys:
        seen = await _workers(keys)
        assert set(seen) == {
            "keys-outbox-relay",
            "keys-last-used",
            "keys-admin-key-listener",
            "keys-admin-key-states",
            "keys-audit-partitions",
        }
        for health in seen.values():
            assert health["running"] is True
            assert set(health) == {"running", "restarts", "last_error", "last_error_at"}
        # A stopped relay shows as not running; started again, it runs again.
        await keys.app.state.relay.stop()
        assert (await _workers(keys))["keys-outbox-relay"]["running"] is False
        keys.app.state.relay.start()
        assert (await _workers(keys))["keys-outbox-relay"]["running"] is True
