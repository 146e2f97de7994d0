"""A ledger service's skeleton: its app factory's common part, and the lifespan that runs the
consumer.

At start: the pool on the service's schema, the migrations (the plumbing's tables, then the
service's ledgers), the topics checked, and when ``consume`` is set the consumer joined; at
stop, the consumer leaves its group (bounded) before the pool closes. An ``AdminKeyFollower``
keeps the admin keys' states (``app.state.admin_keys``) for ``shared.access.management_guard``.
The app has the request id middleware, OpenAI's error shape and ``/healthz``, ``/readyz``,
``/metrics`` (health.py); the service adds its routers, and whatever it keeps on ``app.state``
besides ``pool``, ``consumer`` and ``admin_keys``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI

from shared.admin_key_follower import AdminKeyFollower
from shared.db import MigrationSet, apply_migrations, create_pool
from shared.engine_checks import check_engines
from shared.errors import install_error_handlers
from shared.exactly_once.consumer import LedgerConsumer
from shared.exactly_once.health import health_router
from shared.exactly_once.settings import LedgerServiceSettings
from shared.http import RequestIdMiddleware
from shared.kafka import ensure_topics
from shared.logs import setup_logging
from shared.telemetry import setup_telemetry
from shared.topics import USAGE_EVENTS, USAGE_EVENTS_DLQ

# The service's consumer, given the pool and this process's Kafka client id.
ConsumerFactory = Callable[[asyncpg.Pool, str], LedgerConsumer[Any]]


def ledger_app(
    name: str,
    settings: LedgerServiceSettings,
    *,
    migrations: Sequence[MigrationSet],
    consumer: ConsumerFactory,
    routers: Sequence[APIRouter],
    state: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The service ``name`` (logs, telemetry, client ids): its routers, consumer in the lifespan."""
    setup_logging(name, settings.log_level, settings.log_json)
    setup_telemetry(name, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url.get_secret_value(),
            settings.db_schema,
            max_size=settings.db_pool_size,
            application=f"tollgate-{name}",
        )
        running = None
        admin_keys = AdminKeyFollower(
            settings.keys_url,
            settings.internal_token,
            stale_s=settings.admin_key_stale_s,
            name=f"{name}-admin-key-follower",
        )
        try:
            await apply_migrations(pool, settings.db_schema, migrations)
            if settings.consume:
                await check_engines(settings, topics=(USAGE_EVENTS, USAGE_EVENTS_DLQ))
                await ensure_topics(
                    settings.kafka,
                    settings.topics,
                    prefix=settings.topic_prefix,
                    replication=settings.replication,
                    checked=(USAGE_EVENTS, USAGE_EVENTS_DLQ),
                )
                running = consumer(pool, f"{name}-{socket.gethostname()}-{os.getpid()}")
                await running.start()
            admin_keys.start()
            app.state.pool = pool
            app.state.consumer = running
            app.state.admin_keys = admin_keys
            for key, value in (state or {}).items():
                setattr(app.state, key, value)
            yield
        finally:
            await admin_keys.stop()
            if running is not None:
                await running.stop()
            await pool.close()

    app = FastAPI(title=f"Tollgate {name}", version="0.1.0", lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    return app
