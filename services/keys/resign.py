"""Every key's state re-published, signed by the keyring's signing entry, when it changed.

States made before the key service signed them (the upgrade that brought MACs), or signed by
an entry an operator is about to remove (a rotation), would be refused by the gateways once
they no longer accept them. At start, when ``state_signer`` does not name the signing entry,
every key (revoked ones too: a revoked key must never come back when a cache is rebuilt) gets
a new version, published through the outbox and written to Redis as any change is, in batches
of ``resign_batch`` keys a transaction; then the entry is recorded. Replicas starting at once
may both do it: a key then gets two new versions, which is harmless.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from services.keys.transactions import Transactions
from shared.events import utc_now

if TYPE_CHECKING:
    from services.keys.rows import Conn, Row

log = logging.getLogger(__name__)

# Same projection as repository._KEY_SELECT, for a CTE of the rows bumped here.
_BUMP = """
WITH k AS (
    UPDATE api_keys SET version = version + 1
    WHERE id IN (SELECT id FROM api_keys WHERE seq > $1 ORDER BY seq LIMIT $2 FOR UPDATE)
    RETURNING *
)
SELECT k.*, p.rate_limits AS project_rate_limits, p.budget AS project_budget
FROM k JOIN projects AS p ON p.id = k.project_id ORDER BY k.seq
"""


async def _signer(conn: Conn) -> str | None:
    value = await conn.fetchval("SELECT key_id FROM state_signer")
    return None if value is None else str(value)


async def resign_if_needed(keys: Transactions, batch: int) -> int | None:
    """Re-publish every key's state when the signing entry changed; the count, or None."""
    signer = keys.keyring.signer
    async with keys.transaction() as conn:
        if await _signer(conn) == signer:
            return None
    log.info("re-signing every key state", extra={"signer": signer})
    after, count = 0, 0
    while True:
        now = utc_now()
        async with keys.transaction() as conn:
            rows: list[Row] = await conn.fetch(_BUMP, after, batch)
            for row in rows:
                await keys.publish(conn, row, "key.updated", now)
        if not rows:
            break
        after = rows[-1]["seq"]
        count += len(rows)
    async with keys.transaction() as conn:
        await conn.execute(
            "INSERT INTO state_signer (key_id, keys, signed_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (singleton) DO UPDATE SET key_id = $1, keys = $2, signed_at = $3",
            signer,
            count,
            utc_now(),
        )
    log.info("key states re-signed", extra={"signer": signer, "keys": count})
    return count
