"""The cost ledger as the budgets' source of truth: billing's spend read, and reconciliation.

Redis holds the fast counters; billing's ledger (the Costs API's) is what was really spent.
A budget counter Redis does not hold yet (a new period, a Redis that restarted empty) is
started from the ledger before anything is admitted against it, and every budget a replica
has used lately is raised to the ledger's figure every ``reconcile_s``: the counter only ever
rises to it, never falls (it is ahead of the ledger by the usage events billing has not
applied yet). So a restart of Redis loses no one's spend beyond billing's consumer lag.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import httpx
from pydantic import SecretStr

from services.gateway.policies.plan import BudgetCheck, to_nano

log = logging.getLogger(__name__)

_WATCHED_MAX = 100_000


class SpendUnavailable(Exception):
    """Billing did not give a usable spend figure."""


@dataclass(frozen=True, slots=True)
class ProjectSpend:
    """A project's spend since a moment, in total and per key (dollars, exact)."""

    spent_usd: Decimal
    keys: dict[str, Decimal]

    def of(self, budget: BudgetCheck) -> Decimal:
        if budget.key_id is None:
            return self.spent_usd
        return self.keys.get(budget.key_id, Decimal(0))


class SpendReader:
    """Reads spend from billing's internal endpoint; remembers the budgets it must reconcile."""

    def __init__(self, client: httpx.AsyncClient, billing_url: str, token: SecretStr) -> None:
        self.client = client
        self.url = billing_url.rstrip("/") + "/internal/v1/projects/{}/spend"
        self.headers = {"authorization": f"Bearer {token.get_secret_value()}"}
        self.last_known: dict[str, int] = {}  # budget key -> nano-dollars the ledger said
        self.watched: OrderedDict[str, BudgetCheck] = OrderedDict()
        self._reading: dict[tuple[str, int], asyncio.Future[ProjectSpend]] = {}
        self.reads = 0
        self.failures = 0

    async def spend(self, project_id: str, since: int) -> ProjectSpend:
        """The project's spend since ``since`` (one read at a time per project and moment)."""
        pending = self._reading.get((project_id, since))
        if pending is None:
            pending = asyncio.ensure_future(self._read(project_id, since))
            self._reading[project_id, since] = pending
            pending.add_done_callback(lambda _: self._reading.pop((project_id, since), None))
        return await asyncio.shield(pending)

    async def _read(self, project_id: str, since: int) -> ProjectSpend:
        self.reads += 1
        try:
            answer = await self.client.get(
                self.url.format(project_id), params={"since": since}, headers=self.headers
            )
        except httpx.HTTPError as exc:
            self.failures += 1
            raise SpendUnavailable(f"billing unreachable: {type(exc).__name__}") from exc
        if answer.status_code != 200:
            self.failures += 1
            raise SpendUnavailable(f"billing answered {answer.status_code}")
        try:
            body = answer.json()
            return ProjectSpend(
                Decimal(body["spent_usd"]),
                {str(k): Decimal(v) for k, v in body["keys"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            self.failures += 1
            raise SpendUnavailable("billing answered an invalid spend") from exc

    async def known(self, budget: BudgetCheck) -> int:
        """The ledger's spend for one budget in nano-dollars (remembered for degraded use)."""
        spend = await self.spend(budget.project_id, budget.window.since_unix)
        amount = to_nano(spend.of(budget))
        self.last_known[budget.redis_key] = amount
        return amount

    def watch(self, budgets: Iterable[BudgetCheck]) -> list[BudgetCheck]:
        """Budgets used lately: reconciled until they have not been used for a while.
        Answers those this replica had not watched yet (it reconciles them at once)."""
        new = []
        for budget in budgets:
            if budget.redis_key not in self.watched:
                new.append(budget)
            self.watched[budget.redis_key] = budget
            self.watched.move_to_end(budget.redis_key)
        while len(self.watched) > _WATCHED_MAX:
            self.watched.popitem(last=False)
        return new

    def due(self, now: datetime) -> list[BudgetCheck]:
        """The watched budgets still in their period (those past it are dropped)."""
        for key in [k for k, b in self.watched.items() if b.window.ended(now)]:
            del self.watched[key]
            self.last_known.pop(key, None)
        return list(self.watched.values())


Seed = Callable[[BudgetCheck, int], Awaitable[None]]


async def reconcile_once(ledger: SpendReader, seed: Seed, now: datetime) -> int:
    """Raise every watched budget's counter to the ledger's figure; answers how many."""
    done = 0
    by_read: dict[tuple[str, int], list[BudgetCheck]] = {}
    for budget in ledger.due(now):
        by_read.setdefault((budget.project_id, budget.window.since_unix), []).append(budget)
    for (project_id, since), budgets in by_read.items():
        try:
            spend = await ledger.spend(project_id, since)
        except SpendUnavailable as exc:
            log.warning("budget reconciliation skipped for a project: %s", exc)
            continue
        for budget in budgets:
            amount = to_nano(spend.of(budget))
            ledger.last_known[budget.redis_key] = amount
            await seed(budget, amount)
            done += 1
    return done
