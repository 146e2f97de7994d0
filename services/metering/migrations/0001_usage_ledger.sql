-- replaces sha256:46d118f0b21f9c9ed8e7af957d6dacb092e1cee1df45cde2550eaa378ab79d2e
-- That first text also created the exactly-once tables (processed_events, consumer_offsets);
-- they are in shared/ledger/migrations/0001_exactly_once.sql now, applied before this one
-- (shared/db.py: MigrationSet), so the schema is the same. Schemas where the first text ran
-- stay valid.

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
