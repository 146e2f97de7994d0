"""The policy gate: scopes, then one Redis round trip against every limit and budget.

A request of a key whose key and project have no limits and no budget costs nothing here.
Otherwise it is admitted by the admit script (all or nothing, in one round trip), and settled
after its answer with its real tokens and cost: settlements are queued and sent in pipelines,
off the request path. With Redis away the replica checks on its own (``local.py``) and hands
its spend to Redis once it answers again, so no spend is forgotten. A refusal's words are
``refusals.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.gateway.breaker import Breaker
from services.gateway.errors import EndpointNotAllowed, ModelNotAllowed
from services.gateway.policies.counters import NEEDS_SEED, RedisCounters, Verdict
from services.gateway.policies.headers import rate_headers
from services.gateway.policies.local import LocalCounters
from services.gateway.policies.plan import BudgetCheck, Plan, Planner, settled_cost
from services.gateway.policies.refusals import refuse_unless_admitted
from services.gateway.policies.settler import Settlement, Settler
from services.gateway.policies.spend import SpendReader, SpendUnavailable, reconcile_once
from services.gateway.usage.meter import Usage
from shared.catalogue import ModelEntry
from shared.events import KeyState
from shared.policy import Scope, allows_model, allows_scope
from shared.redis_client import REDIS_ERRORS, RedisClient

log = logging.getLogger(__name__)

_HEARTBEAT_S = 5.0
_ALIVE_S = 15.0


@dataclass(slots=True)
class Admission:
    """An admitted request's claims, until it is settled."""

    plan: Plan
    reservation: str
    second: int
    entry: ModelEntry | None
    in_redis: bool
    headers: list[tuple[bytes, bytes]]


class PolicyGate:
    """Enforces a key's scopes, rate limits and budgets, with every replica's counts."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        breaker: Breaker,
        ledger: SpendReader,
        timeout_s: float,
        lease_s: float,
        reconcile_s: float,
        instance: str | None = None,
    ) -> None:
        self.client = client
        self.counters = RedisCounters(client)
        self.planner = Planner(prefix)
        self.breaker = breaker
        self.ledger = ledger
        self.local = LocalCounters()
        self.timeout_s = timeout_s
        self.lease_ms = int(lease_s * 1000)
        self.reconcile_s = reconcile_s
        self.instance = instance or secrets.token_hex(8)
        self.replicas_key = f"{prefix}gateways"
        self.replicas = 1  # alive gateways when Redis last answered: the degraded share
        self.settler = Settler(self.counters, self.local, timeout_s=max(timeout_s, 1.0))
        self.degraded_admissions = 0
        self._background: set[asyncio.Task[None]] = set()

    # Scopes: no I/O.

    @staticmethod
    def check_scope(key: KeyState, scope: Scope) -> None:
        if not allows_scope(key.allowed_endpoints, scope):
            raise EndpointNotAllowed(scope)

    @staticmethod
    def check_model(key: KeyState, model: str) -> None:
        if not allows_model(key.allowed_models, model):
            raise ModelNotAllowed(model)

    # Limits and budgets.

    async def admit(
        self,
        key: KeyState,
        entry: ModelEntry | None,
        output: int | None,
        body_bytes: int,
        state: Any,
    ) -> Admission | None:
        """Count the request against its limits and budgets, or raise RateLimited or
        QuotaExceeded; the x-ratelimit headers go on ``state.ratelimit_headers`` either way.
        output is the most output tokens the request may produce (None: no limit set)."""
        if not key.has_policy:
            return None
        plan = self.planner.plan(key, entry, output, body_bytes, datetime.now(UTC))
        reservation = secrets.token_hex(8)
        verdict = await self._shared_admit(plan, reservation)
        in_redis = verdict is not None
        if verdict is None:
            self.degraded_admissions += 1
            verdict = self.local.admit(
                plan, reservation, self.replicas, int(time.time() * 1000), self.ledger.last_known
            )
        headers = rate_headers(verdict.rates)
        if headers:
            state.ratelimit_headers = headers
        if plan.budgets and (new := self.ledger.watch(plan.budgets)) and in_redis:
            self._reconcile_soon(new)
        refuse_unless_admitted(verdict, plan)
        return Admission(plan, reservation, verdict.second, entry, in_redis, headers)

    async def _shared_admit(self, plan: Plan, reservation: str) -> Verdict | None:
        """The admit script's verdict (seeding budgets from the ledger first when Redis has
        none yet); None when Redis cannot answer now."""
        if not self.breaker.available():
            return None
        try:
            for _ in range(3):
                verdict = await asyncio.wait_for(
                    self.counters.admit(plan, reservation, self.lease_ms), self.timeout_s
                )
                if verdict.outcome != NEEDS_SEED:
                    break
                await self._seed(plan.budgets)
            else:
                raise TimeoutError("budget counters kept vanishing while seeded")
        except REDIS_ERRORS as exc:
            log.warning("policy counters unavailable (%s); checking on this replica", exc)
            self.breaker.failed()
            return None
        self.breaker.succeeded()
        self.local.remember(plan, verdict)
        return verdict

    async def _seed(self, budgets: tuple[BudgetCheck, ...]) -> None:
        """Start budget counters from the cost ledger (or, billing away, from the last figure
        this replica read, marked so the next reconciliation corrects it)."""
        for budget in budgets:
            try:
                known = await asyncio.wait_for(self.ledger.known(budget), 2.0)
                from_ledger = True
            except (SpendUnavailable, TimeoutError) as exc:
                log.warning("budget started without the cost ledger: %s", exc)
                known, from_ledger = self.ledger.last_known.get(budget.redis_key, 0), False
            await asyncio.wait_for(
                self.counters.seed(budget, known, from_ledger=from_ledger), self.timeout_s
            )

    def settle(self, admission: Admission, usage: Usage) -> None:
        """Queue the real usage of an admitted request (sent in the background)."""
        plan = admission.plan
        tokens = usage.input_tokens + usage.output_tokens
        cost = 0
        if plan.budgets:
            cost = settled_cost(
                admission.entry,
                datetime.now(UTC),
                input_tokens=usage.input_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
            )
        if not admission.in_redis:
            self.local.release(
                plan, admission.reservation, admission.second, tokens - plan.token_estimate
            )
            tokens = plan.token_estimate  # Redis never counted its estimate: nothing to correct
        for budget in plan.budgets:
            self.local.owe(budget.redis_key, cost)
        if not any(r.kind == "tokens" for r in plan.rates) and not plan.budgets:
            return
        self.settler.add(Settlement(plan, admission.reservation, admission.second, tokens, cost))

    async def run_settler(self) -> None:
        await self.settler.run()

    async def flush(self) -> None:
        """Send what is left to settle, at a stop (bounded)."""
        await self.settler.flush(max(self.timeout_s, 1.0) * 4)

    async def run_upkeep(self) -> None:
        """Count the replicas alive (the degraded share), and reconcile budgets with the
        cost ledger every ``reconcile_s``."""
        next_reconcile = time.monotonic() + self.reconcile_s
        try:
            await asyncio.wait_for(self.counters.load_scripts(), max(self.timeout_s, 2.0))
        except REDIS_ERRORS as exc:  # loaded when first needed, then
            log.warning("policy scripts not loaded ahead: %s", exc)
        while True:
            await self._heartbeat()
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self.reconcile_s
                try:
                    await reconcile_once(self.ledger, self._ledger_seed, datetime.now(UTC))
                except REDIS_ERRORS as exc:
                    log.warning("budget reconciliation failed: %s", exc)
            await asyncio.sleep(min(_HEARTBEAT_S, self.reconcile_s))

    def _reconcile_soon(self, budgets: list[BudgetCheck]) -> None:
        """A budget this replica sees for the first time (it just started, or the budget is
        new) is raised to the ledger's figure now, not at the next reconciliation."""

        async def reconcile() -> None:
            for budget in budgets:
                try:
                    amount = await asyncio.wait_for(self.ledger.known(budget), 2.0)
                    await self._ledger_seed(budget, amount)
                except (SpendUnavailable, *REDIS_ERRORS) as exc:
                    log.info("first reconciliation of a budget deferred: %s", exc)

        task = asyncio.create_task(reconcile())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ledger_seed(self, budget: BudgetCheck, amount: int) -> None:
        await asyncio.wait_for(
            self.counters.seed(budget, amount, from_ledger=True), max(self.timeout_s, 1.0)
        )

    async def _heartbeat(self) -> None:
        now = time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zadd(self.replicas_key, {self.instance: now})
                pipe.zremrangebyscore(self.replicas_key, "-inf", now - _ALIVE_S)
                pipe.zcard(self.replicas_key)
                answers = await asyncio.wait_for(pipe.execute(), max(self.timeout_s, 1.0))
        except REDIS_ERRORS as exc:
            log.debug("heartbeat failed: %s", exc)
            return
        self.replicas = max(1, int(answers[2]))

    async def leave(self) -> None:
        """Drop out of the replica count at a clean stop."""
        with contextlib.suppress(*REDIS_ERRORS):
            await asyncio.wait_for(self.client.zrem(self.replicas_key, self.instance), 1.0)

    def stats(self) -> dict[str, int]:
        return {
            "policy_replicas": self.replicas,
            "policy_degraded_admissions": self.degraded_admissions,
            "policy_settlements_pending": self.settler.pending,
            "policy_settle_failures": self.settler.failures,
            "policy_budgets_watched": len(self.ledger.watched),
        }
