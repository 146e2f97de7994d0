"""The key service's composition root: the app factory and the lifespan that runs its workers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI

from services.keys.access_api import organization_router
from services.keys.admin_key_cache import AdminKeyCache
from services.keys.admin_key_stream import AdminKeyStates, admin_key_states_router
from services.keys.api import health_router, internal_router, management_router
from services.keys.audit import Partitions
from services.keys.fields import CATALOGUE_IDS
from services.keys.last_used import LastUsedConsumer
from services.keys.mirror import StateMirror
from services.keys.outbox import OutboxRelay
from services.keys.resign import resign_if_needed
from services.keys.service import KeyService
from services.keys.settings import KeysSettings
from services.keys.sign_ins import sign_in_router
from shared.catalogue import load_catalogue
from shared.db import apply_migrations, create_pool
from shared.engine_checks import check_engines
from shared.errors import install_error_handlers
from shared.http import RequestIdMiddleware
from shared.logs import setup_logging
from shared.openapi import install_openapi, nodes
from shared.telemetry import setup_telemetry
from shared.topics import AUDIT_EVENTS, KEYS_EVENTS, USAGE_EVENTS, USAGE_EVENTS_DLQ

MIGRATIONS = Path(__file__).parent / "migrations"


def _admin_access(
    settings: KeysSettings, pool: asyncpg.Pool
) -> tuple[AdminKeyCache, AdminKeyStates]:
    """This replica's cache of admin keys by hash (its own checks), and every admin key's state
    for the other services' streams, synced at once on the cache's notifications."""
    cache = AdminKeyCache(
        pool,
        dsn=settings.database_url.get_secret_value(),
        schema=settings.db_schema,
        channel=settings.admin_channel,
        ttl_s=settings.admin_key_cache_ttl_s,
    )
    states = AdminKeyStates(pool)
    cache.on_change = states.changed
    return cache, states


def _kafka_topics(settings: KeysSettings) -> tuple[str, ...]:
    """The topics this replica's workers use (none when it runs neither)."""
    out: tuple[str, ...] = ()
    if settings.relay:
        out += (KEYS_EVENTS, AUDIT_EVENTS)
    if settings.consume_usage:
        out += (USAGE_EVENTS, USAGE_EVENTS_DLQ)
    return out


def _refine(app: FastAPI, settings: KeysSettings) -> Callable[[dict[str, Any]], None]:
    """What the served document learns from the running service: the catalogue's model ids
    (allowed_models takes no other) and the longest grace period a rotation may ask."""

    def refine(doc: dict[str, Any]) -> None:
        service: KeyService | None = getattr(app.state, "service", None)
        for node in nodes(doc):
            if node.pop(CATALOGUE_IDS, None) and service is not None:
                for branch in node.get("anyOf", [node]):
                    if branch.get("type") == "array":
                        branch["items"]["enum"] = sorted(service.models)
        rotate = doc["components"]["schemas"]["RotateKey"]["properties"]
        rotate["grace_period_seconds"]["maximum"] = settings.max_grace_s

    return refine


def create_app(settings: KeysSettings | None = None) -> FastAPI:
    """The key service: management and verify APIs, outbox relay, last_used consumer."""
    settings = settings or KeysSettings()
    setup_logging("keys", settings.log_level, settings.log_json)
    setup_telemetry("keys", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalogue = load_catalogue(settings.catalogue_path)  # before anything else can fail
        pool = await create_pool(
            settings.database_url.get_secret_value(),
            settings.db_schema,
            max_size=settings.db_pool_size,
            application="tollgate-keys",
        )
        client_id = f"keys-{socket.gethostname()}-{os.getpid()}"
        relay = OutboxRelay(settings, client_id) if settings.relay else None
        consumer = LastUsedConsumer(settings, pool, client_id) if settings.consume_usage else None
        mirror = (
            StateMirror(
                settings.redis_url,
                settings.redis_prefix,
                settings.redis_timeout_s,
                cluster=settings.redis_cluster,
                auth=settings.redis_auth,
                trusted=settings.keyring().verify,
            )
            if settings.redis_write
            else None
        )
        admin_keys, admin_key_states = _admin_access(settings, pool)
        partitions = Partitions(
            pool,
            months_ahead=settings.audit_months_ahead,
            retention_months=settings.audit_retention_months,
        )
        try:
            # A certificate, a password or an ACL wrong stops the start (one log line).
            await check_engines(
                settings,
                topics=_kafka_topics(settings),
                redis=settings.redis_write,
            )
            await apply_migrations(pool, settings.db_schema, MIGRATIONS)
            # Before serving: a change with no partition for its audit entry would fail.
            await partitions.maintain()
            # Kafka is not needed to start: the API works without it and the workers retry.
            for worker in (partitions, admin_keys, admin_key_states, relay, consumer):
                if worker is not None:
                    worker.start()
            held = {
                "settings": settings,
                "admin_keys": admin_keys,
                "admin_key_states": admin_key_states,
                "partitions": partitions,
                "pool": pool,
                "relay": relay,
                "consumer": consumer,
                "mirror": mirror,
            }
            for name, value in held.items():
                setattr(app.state, name, value)
            app.state.service = KeyService(
                pool,
                topic=settings.keys_topic,
                channel=settings.notify_channel,
                max_grace_s=settings.max_grace_s,
                models=[m.id for m in catalogue.models],
                mirror=mirror,
                keyring=settings.keyring(),
                audit_topic=settings.audit_topic,
                admin_channel=settings.admin_channel,
            )
            # Before serving: states made before this signing entry are re-published signed.
            await resign_if_needed(app.state.service, settings.resign_batch)
            yield
        finally:
            for stopped in (admin_key_states, admin_keys, partitions, consumer, relay):
                if stopped is not None:
                    await stopped.stop()
            if mirror is not None:
                await mirror.close()
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                # A connection stuck after an outage must not hold the shutdown hostage.
                pool.terminate()

    app = FastAPI(
        title="Tollgate keys",
        version="0.1.0",
        description="Projects, their API keys and admin keys: shown once, hashed at rest, "
        "every key change published to keys.events, every change in the audit log.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    install_openapi(app, _refine(app, settings))
    app.include_router(health_router)
    app.include_router(management_router())
    app.include_router(organization_router())
    app.include_router(internal_router(settings))
    app.include_router(sign_in_router(settings))
    app.include_router(admin_key_states_router(settings))
    return app
