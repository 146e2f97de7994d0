"""Metering's composition root: the app factory (the ledger service skeleton,
shared/exactly_once/app.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.metering.api import usage_router
from services.metering.consumer import usage_consumer
from services.metering.settings import MeteringSettings
from shared.exactly_once import ledger_app, migrations
from shared.openapi import install_openapi

MIGRATIONS = migrations(Path(__file__).parent / "migrations")


def create_app(settings: MeteringSettings | None = None) -> FastAPI:
    """The metering service: Usage API on HTTP, usage.events consumer in the lifespan."""
    settings = settings or MeteringSettings()
    app = ledger_app(
        "metering",
        settings,
        migrations=MIGRATIONS,
        consumer=lambda pool, client_id: usage_consumer(settings, pool, client_id),
        routers=[usage_router(settings)],
    )
    install_openapi(app)  # 400s, not 422s; the credential as a bearer scheme
    return app
