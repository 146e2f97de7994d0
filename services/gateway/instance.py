"""Every long-lived part of one gateway instance, wired together: the composition root.

Apart from the app factory (``main.py``) so that the routes (``api.py``, ``transport/asgi.py``)
can name the ``Gateway`` they are handed without importing the module that imports them.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.gateway.breaker import Breaker
from services.gateway.keys.auth import Authenticator, Verifier
from services.gateway.keys.cache import LocalCache, RateBound
from services.gateway.keys.feeder import KAFKA_ERRORS, Feeder
from services.gateway.keys.subscriber import Subscriber
from services.gateway.keys.trust import StateTrust
from services.gateway.policies.gate import PolicyGate
from services.gateway.policies.spend import SpendReader
from services.gateway.proxy import Proxy
from services.gateway.request.body import BodyBudget, BodyLimits
from services.gateway.settings import GatewaySettings
from services.gateway.telemetry.fleet_metrics import FleetCollector
from services.gateway.telemetry.metrics import Metrics
from services.gateway.upstream.fleet import Fleet
from services.gateway.upstream.health import FleetKeeper
from services.gateway.upstream.pool import UpstreamPool
from services.gateway.upstream.reload import CatalogueWatch
from services.gateway.usage.emitter import UsageEmitter
from services.gateway.usage.spool import Spool
from shared.catalogue import Catalogue
from shared.key_store import KeyStore
from shared.redis_client import REDIS_ERRORS, connect, subscription_urls
from shared.worker import Backoff, Worker, Workers


class Gateway:
    """Every long-lived part of one gateway instance; started and stopped by the lifespan."""

    def __init__(self, settings: GatewaySettings, catalogue: Catalogue, metrics: Metrics) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.metrics = metrics
        s = settings
        # No client-side retries: a Redis that does not answer at once is skipped (breaker).
        self.redis = connect(
            s.redis_url, cluster=s.redis_cluster, timeout_s=s.redis_timeout_s, auth=s.redis_auth
        )
        self.redis_breaker = Breaker(s.dependency_retry_s)
        # Key states are trusted only with the key service's MAC, checked where they enter.
        self.trust = StateTrust(s.keyring(), metrics, accept_unsigned=s.accept_unsigned_states)
        self.local = LocalCache(
            s.local_cache_size,
            s.local_cache_ttl_s,
            s.negative_cache_ttl_s,
            unsubscribed_ttl_s=s.unsubscribed_cache_ttl_s,
            stale_max_s=s.stale_key_max_s,
            negative_size=s.negative_cache_size,
        )
        self.store = KeyStore(
            self.redis, s.redis_prefix, lambda state: self.trust.admit(state, "redis")
        )
        self.subscriber = Subscriber(
            redis_url=s.redis_url,
            auth=s.redis_auth,
            redis_urls=lambda: subscription_urls(s.redis_url, self.redis),
            channel=self.store.channel,
            local=self.local,
            trust=self.trust,
            timeout_s=max(s.redis_timeout_s, 1.0),
        )
        self.keys_client = httpx.AsyncClient(timeout=s.verify_timeout_s)
        # The models' servers: aiohttp's client was a third of the gateway's CPU per request.
        self.upstream = UpstreamPool(
            max_connections=s.upstream_max_connections,
            keep_idle=s.upstream_keepalive,
            expiry_s=s.upstream_keepalive_expiry_s,
        )
        self.auth = Authenticator(
            local=self.local,
            store=self.store,
            verifier=Verifier(self.keys_client, s.keys_url, s.internal_token),
            metrics=metrics,
            redis_breaker=self.redis_breaker,
            verify_breaker=Breaker(s.dependency_retry_s),
            redis_timeout_s=s.redis_timeout_s,
            trust=self.trust,
            verify_bound=RateBound(s.verify_rate_per_s, s.verify_burst),
        )
        self.emitter = UsageEmitter(
            bootstrap=s.kafka,
            topic_prefix=s.topic_prefix,
            spool=Spool(s.spool_dir, max_bytes=s.spool_max_bytes, warn_ratio=s.spool_warn_ratio),
            metrics=metrics,
            queue_size=s.usage_queue_size,
            delivery_timeout_s=s.kafka_delivery_timeout_s,
            linger_s=s.usage_linger_s,
        )
        self.feeder = Feeder(
            bootstrap=s.kafka,
            topic_prefix=s.topic_prefix,
            local=self.local,
            store=self.store,
            redis_breaker=self.redis_breaker,
            metrics=metrics,
            trust=self.trust,
            replication=s.replication,
            topics=s.topics,
        )
        self.policies = PolicyGate(
            self.redis,
            prefix=s.redis_prefix,
            breaker=Breaker(s.dependency_retry_s),
            ledger=SpendReader(self.keys_client, s.billing_url, s.internal_token),
            timeout_s=s.redis_timeout_s,
            lease_s=s.reservation_lease_s,
            reconcile_s=s.budget_reconcile_s,
        )
        self.proxy = Proxy(
            catalogue,
            auth=self.auth,
            policies=self.policies,
            pool=self.upstream,
            emitter=self.emitter,
            limits=BodyLimits(
                s.max_body_bytes, s.max_json_values, s.json_memory_ratio, s.large_body_bytes
            ),
            budget=BodyBudget(s.large_body_budget_bytes, s.large_body_wait_s),
        )
        # The models' fleets: probes, queue reads, DNS; the catalogue reloaded as it changes.
        self.keeper = FleetKeeper(self.fleets)
        self.catalogue_watch = CatalogueWatch(s.catalogue_path, self.reload, s.catalogue_poll_s)
        metrics.registry.register(FleetCollector(self.fleets))
        # Background work: key events in, usage events out, settlements and upkeep. A bug
        # in one event must not stop key or usage events: each restarts after a failure.
        loops = Backoff(0.5, 5.0)
        self.workers = Workers(
            Worker(
                "keys-feeder", self.feeder.run, expected=KAFKA_ERRORS, backoff=Backoff(0.5, 2.0)
            ),
            Worker(
                "key-states", self.subscriber.run, expected=REDIS_ERRORS, backoff=Backoff(0.25, 1.0)
            ),
            Worker("usage-publisher", self.emitter.run_publisher, backoff=loops),
            Worker("spool-replayer", self.emitter.run_replayer, backoff=loops),
            Worker("policy-settler", self.policies.run_settler, backoff=loops),
            Worker("policy-upkeep", self.policies.run_upkeep, backoff=loops),
            Worker("upstream-health", self.keeper.run, backoff=loops),
            Worker("catalogue-watch", self.catalogue_watch.run, backoff=loops),
        )

    def fleets(self) -> list[Fleet]:
        """Every model's fleet, as the current catalogue has them."""
        return [route.fleet for route in self.proxy.routes.values()]

    def reload(self, catalogue: Catalogue) -> None:
        """Route by ``catalogue`` from now on (its file changed, or SIGHUP)."""
        self.proxy.reload(catalogue)
        self.catalogue = catalogue

    def start(self) -> None:
        """Start the background workers; none of them blocks start-up."""
        self.workers.start()

    async def stop(self) -> None:
        # Cancelled at once and bounded (shared/worker.py): a worker that lost its cancel is
        # left behind rather than holding up the shutdown; usage events are flushed below.
        await self.workers.stop()
        await self.policies.flush()
        await self.policies.leave()
        await self.emitter.close()
        await self.keeper.close()
        await self.upstream.close()
        await self.keys_client.aclose()
        await self.redis.aclose()

    def readiness(self) -> dict[str, Any]:
        """What /readyz reports; ``usage_accepting`` false means metered requests get 503."""
        spool = self.emitter.spool
        return {
            "keys_feeder_caught_up": self.feeder.caught_up.is_set(),
            "redis_available": self.redis_breaker.available(),
            "kafka_available": self.emitter.kafka.available(),
            "usage_accepting": self.emitter.accepting,
            "usage_pending": self.emitter.pending,
            "spool_depth": spool.depth,
            "spool_bytes": spool.used_bytes,
            "spool_max_bytes": spool.max_bytes,
            "quarantined": spool.quarantine.count,
            "keys_cached": len(self.local),
            "key_states_subscribed": self.subscriber.up,
            "key_states_received": self.subscriber.received,
            **self.policies.stats(),
            "upstreams": self.upstreams(),
            "workers": self.workers.health(),
        }

    def upstreams(self) -> dict[str, dict[str, Any]]:
        """Each model's endpoints that take requests, and those ejected for now."""
        return {
            fleet.model: {
                "healthy": [r.name for r in fleet.replicas if not r.ejected],
                "ejected": [r.name for r in fleet.replicas if r.ejected],
            }
            for fleet in self.fleets()
        }
