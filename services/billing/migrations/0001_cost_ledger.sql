-- replaces sha256:88f92ded9cd99a2a11eeb0d4e361900d01302c07b311da5591605ad99e11f082
-- That first text also created the exactly-once tables (processed_events, consumer_offsets);
-- they are in shared/ledger/migrations/0001_exactly_once.sql now, applied before this one
-- (shared/db.py: MigrationSet), so the schema is the same. Schemas where the first text ran
-- stay valid.

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
