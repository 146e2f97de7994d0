"""The gateway's /readyz shows each background worker's lifecycle (shared/worker.py)."""

from __future__ import annotations

import httpx

from tests.served import Served

_WORKERS = {
    "keys-feeder",
    "key-states",
    "usage-publisher",
    "spool-replayer",
    "policy-settler",
    "policy-upkeep",
    "upstream-health",
    "catalogue-watch",
}


async def test_readyz_shows_every_worker_running(gateway: Served) -> None:
    async with httpx.AsyncClient() as client:
        body = (await client.get(gateway.url + "/readyz")).json()
    assert set(body["workers"]) == _WORKERS
    for name, health in body["workers"].items():
        assert set(health) == {"running", "restarts", "last_error", "last_error_at"}, name
        assert health["running"] is True, name
    assert "keys_feeder_caught_up" in body, "the fields that were there stay"
