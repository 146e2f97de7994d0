"""Billing's composition root: the app factory (the ledger skeleton, shared/exactly_once/app.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.billing.api import costs_router, internal_router
from services.billing.consumer import cost_consumer
from services.billing.settings import BillingSettings
from shared.catalogue import load_catalogue
from shared.exactly_once import ledger_app, migrations
from shared.openapi import install_openapi

MIGRATIONS = migrations(Path(__file__).parent / "migrations")


def create_app(settings: BillingSettings | None = None) -> FastAPI:
    """The billing service: Costs API on HTTP, usage.events pricing consumer in the lifespan."""
    settings = settings or BillingSettings()
    # A broken price book stops the start, before any event could be priced wrong.
    catalogue = load_catalogue(settings.catalogue_path)
    app = ledger_app(
        "billing",
        settings,
        migrations=MIGRATIONS,
        consumer=lambda pool, client_id: cost_consumer(settings, pool, catalogue, client_id),
        routers=[costs_router(settings), internal_router(settings)],
        state={"catalogue": catalogue},
    )
    install_openapi(app)  # 400s, not 422s; the credential as a bearer scheme
    return app
