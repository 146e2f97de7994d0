"""Billing's composition root: the app factory and the lifespan that runs the consumer."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.billing.api import costs_router, internal_router
from services.billing.handlers import cost_consumer
from services.billing.settings import BillingSettings
from shared.catalogue import load_catalogue
from shared.db import apply_migrations, create_pool
from shared.errors import install_error_handlers
from shared.http import RequestIdMiddleware
from shared.kafka import ensure_topics
from shared.ledger.health import health_router
from shared.ledger.store import migrations
from shared.logs import setup_logging
from shared.telemetry import setup_telemetry
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ

MIGRATIONS = migrations(Path(__file__).parent / "migrations")


def create_app(settings: BillingSettings | None = None) -> FastAPI:
    """The billing service: Costs API on HTTP, usage.events pricing consumer in the lifespan."""
    settings = settings or BillingSettings()
    setup_logging("billing", settings.log_level, settings.log_json)
    setup_telemetry("billing", settings)
    # A broken price book stops the start, before any event could be priced wrong.
    catalogue = load_catalogue(settings.catalogue_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url.get_secret_value(),
            settings.db_schema,
            max_size=settings.db_pool_size,
            application="tollgate-billing",
        )
        consumer = None
        try:
            await apply_migrations(pool, settings.db_schema, MIGRATIONS)
            if settings.consume:
                await ensure_topics(
                    settings.kafka_bootstrap,
                    prefix=settings.topic_prefix,
                    replication=settings.replication,
                    checked=(USAGE_EVENTS, USAGE_EVENTS_DLQ),
                )
                client_id = f"billing-{socket.gethostname()}-{os.getpid()}"
                consumer = cost_consumer(settings, pool, catalogue, client_id)
                await consumer.start()
            app.state.pool = pool
            app.state.consumer = consumer
            app.state.catalogue = catalogue
            yield
        finally:
            if consumer is not None:
                await consumer.stop()
            await pool.close()

    app = FastAPI(title="Tollgate billing", version="0.1.0", lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(costs_router(settings))
    app.include_router(internal_router(settings))
    return app
