-- Exactly-once plumbing (shared/ledger/consumer.py): event ids seen, and where each
-- partition stands. Both are written in the same transaction as the ledger.
-- Applied to every ledger service's schema before the service's own migrations. Until this
-- package held them, each service's 0001 migration created these tables: IF NOT EXISTS
-- leaves those schemas as they are (the definitions were the same).
CREATE TABLE IF NOT EXISTS processed_events (
    event_id uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);
-- Rows arrive in seen_at order: a BRIN index makes the window cleanup cheap to maintain.
CREATE INDEX IF NOT EXISTS processed_events_seen_at ON processed_events USING brin (seen_at);

CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
