"""The ledger services' package: what metering and billing share, so each keeps only its own.

A ledger service consumes ``usage.events`` into ledgers in PostgreSQL, exactly once, and
serves them over HTTP. What is the same for every such service lives here:

- the consumer engine (``consumer``, ``batch``, ``split``, ``dlq``, ``progress``, ``store``,
  ``retry``, ``types``): batches in one transaction with the event-id dedupe and the
  partitions' offsets, dead letters, stalls;
- the tables that engine needs (``migrations/``: ``processed_events``, ``consumer_offsets``),
  applied to each service's schema before the service's own migrations (``migrations()``);
- the service skeleton (``app``: pool, migrations, topics, consumer in the lifespan; errors in
  OpenAI's shape; ``/healthz``, ``/readyz``, ``/metrics`` from ``health``), its settings
  (``settings``), the 503 of a ledger that cannot be read (``errors``) and the page of buckets
  the Usage and Costs APIs answer (``page``).

A service brings its ledger tables (its migrations folder), its query and its handler: a
``parse`` (record bytes to an event, or ``Poison``: ``usage.parse_usage`` refuses what every
ledger refuses) and an ``apply`` (fresh events into its
ledger, inside the batch's transaction).
"""

from typing import TYPE_CHECKING

from shared.exactly_once.app import ledger_app
from shared.exactly_once.consumer import LedgerConsumer
from shared.exactly_once.errors import LedgerError, LedgerUnavailable, unavailable_as_503
from shared.exactly_once.page import bucket_page, bucket_params
from shared.exactly_once.settings import LedgerServiceSettings
from shared.exactly_once.store import migrations
from shared.exactly_once.types import Apply, ConsumerConfig, ConsumerStats, Identified, Poison
from shared.exactly_once.usage import parse_usage

if TYPE_CHECKING:
    from shared.exactly_once.types import Conn

__all__ = [
    "Apply",
    "Conn",
    "ConsumerConfig",
    "ConsumerStats",
    "Identified",
    "LedgerConsumer",
    "LedgerError",
    "LedgerServiceSettings",
    "LedgerUnavailable",
    "Poison",
    "bucket_page",
    "bucket_params",
    "ledger_app",
    "migrations",
    "parse_usage",
    "unavailable_as_503",
]
