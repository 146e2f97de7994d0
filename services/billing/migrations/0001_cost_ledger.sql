-- Exactly-once plumbing (shared/ledger_consumer.py): event ids seen, and where each
-- partition stands. Both are written in the same transaction as the ledger.
CREATE TABLE processed_events (
    event_id uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);
-- Rows arrive in seen_at order: a BRIN index makes the window cleanup cheap to maintain.
CREATE INDEX processed_events_seen_at ON processed_events USING brin (seen_at);

CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- The cost ledger: USD per project, UTC day, key, model and line item ("input",
-- "cached input", "output"). Amounts are exact: each event's cost is tokens times the
-- price per million in force at its occurred_at, divided by a million, never rounded.
-- 18 fractional digits hold that exactly for prices with up to 12 decimals.
CREATE TABLE cost_day (
    project_id text NOT NULL,
    day date NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    line_item text NOT NULL CHECK (line_item IN ('input', 'cached input', 'output')),
    tokens bigint NOT NULL DEFAULT 0,
    amount numeric(38, 18) NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, day, key_id, model, line_item)
);
