"""The gateway's app factory and lifespan (its parts are wired in ``instance.py``)."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.gateway.api import router
from services.gateway.instance import Gateway
from services.gateway.settings import GatewaySettings
from services.gateway.telemetry.metrics import Metrics
from services.gateway.transport.asgi import ProxiedRoutes
from services.gateway.upstream.sighup import reloads
from services.gateway.usage.responses import OverheadMiddleware
from shared.catalogue import load_catalogue
from shared.engine_checks import check_engines
from shared.errors import install_error_handlers
from shared.http import RequestIdMiddleware
from shared.logs import setup_logging
from shared.telemetry import setup_telemetry
from shared.topics import KEYS_EVENTS, USAGE_EVENTS

log = logging.getLogger(__name__)


# Allocations between young-generation collections (CPython's default: 700). Every request
# allocates a few hundred objects, so the default collected several times per request.
_GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Cyclic garbage collection was a tenth of the gateway's CPU under load (a native py-spy
    profile): collected young generations every few requests, and traversed every object of
    the process at each full collection. What exists once started (modules, catalogue, pools,
    clients) lives as long as the process: collected once, then frozen out of the sweeps; the
    young generation is collected less often. Cyclic garbage is still collected, later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 20)


def create_app(settings: GatewaySettings | None = None) -> ProxiedRoutes:
    """The gateway app (``uvicorn services.gateway.main:create_app --factory``)."""
    settings = settings or GatewaySettings()
    setup_logging("gateway", settings.log_level, settings.log_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    setup_telemetry("gateway", settings)
    catalogue = load_catalogue(settings.catalogue_path)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A certificate, a password or an ACL wrong stops the start (one log line).
        await check_engines(settings, topics=(KEYS_EVENTS, USAGE_EVENTS), redis=True)
        gateway = Gateway(settings, catalogue, metrics)
        app.state.gateway = gateway
        await gateway.keeper.prime()  # a DNS fleet's endpoints, before the first request
        gateway.start()
        reloads.add(gateway.catalogue_watch.request)
        _tune_gc()
        log.info("gateway started", extra={"models": [m.id for m in catalogue.models]})
        try:
            yield
        finally:
            reloads.discard(gateway.catalogue_watch.request)
            await gateway.stop()

    app = FastAPI(title="Tollgate gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(OverheadMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return ProxiedRoutes(app, metrics)
