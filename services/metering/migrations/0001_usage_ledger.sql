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

-- The usage ledger: one row per project, minute, key and model. Hours and days are
-- summed from these rows at query time. The primary key leads with the project and the
-- minute because every read is one project over a time range.
CREATE TABLE usage_minute (
    project_id text NOT NULL,
    minute timestamptz NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    cached_input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, minute, key_id, model)
);
