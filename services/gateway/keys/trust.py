"""Which key states a gateway trusts: those whose MAC says the key service made them.

A state is checked once, where it enters the process (the feeder's ``keys.events``, the Redis
subscription, a Redis lookup, the key service's verify answer), never per request: the
process cache only ever holds states that passed. One that fails is refused as if absent
(never cached, never written to Redis, never serving a request), counted on ``/metrics``
(``tollgate_gateway_key_states_refused_total{source}``) and logged at most once per source
per ``log_every_s``, with its key id and the count held back, never a MAC or a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services.gateway.telemetry.metrics import Metrics
from shared.events import KeyState
from shared.state_mac import Keyring

log = logging.getLogger(__name__)


class StateTrust:
    """Admits the key service's states; refuses, counts and logs the others."""

    def __init__(
        self,
        keyring: Keyring,
        metrics: Metrics,
        *,
        accept_unsigned: bool = False,
        log_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyring = keyring
        self.metrics = metrics
        self.accept_unsigned = accept_unsigned
        self.log_every_s = log_every_s
        self.clock = clock
        self._logged: dict[str, tuple[float, int]] = {}  # source: (logged at, held back)

    def admit(self, state: KeyState, source: str) -> bool:
        """True when the state may be used; else it is counted and logged as refused."""
        if self.keyring.verify(state):
            return True
        if state.mac is None and self.accept_unsigned:
            return True
        why = "no MAC" if state.mac is None else "a MAC that does not verify"
        self.refused(source, why, state.key_id)
        return False

    def refused(self, source: str, why: str, key_id: str | None = None) -> None:
        """Count and (at most once a window per source) log a refused state."""
        self.metrics.key_states_refused.labels(source).inc()
        now = self.clock()
        at, held = self._logged.get(source, (float("-inf"), 0))
        if now - at < self.log_every_s:
            self._logged[source] = (at, held + 1)
            return
        self._logged[source] = (now, 0)
        more = f" ({held} more refused from there since the last such line)" if held else ""
        log.warning(
            "key state from %s refused: %s%s",
            source,
            why,
            more,
            extra={"key_id": key_id, "source": source},
        )
