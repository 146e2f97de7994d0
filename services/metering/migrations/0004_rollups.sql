-- Hour and day rollups of the usage ledger, kept in the same transaction as the minute rows
-- (services/metering/repository.py add_usage), so that a month at 1h or 1d reads hundreds of
-- rows, not tens of thousands. Buckets are UTC-aligned (date_bin from the epoch), as the
-- Usage API's buckets are. Filled once here from the minute rows there are.
CREATE TABLE usage_hour (
    project_id text NOT NULL,
    hour timestamptz NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    cached_input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, hour, key_id, model)
);

CREATE TABLE usage_day (
    project_id text NOT NULL,
    day timestamptz NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    cached_input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, day, key_id, model)
);

INSERT INTO usage_hour
SELECT project_id, date_bin('1 hour', minute, TIMESTAMPTZ 'epoch'), key_id, model,
       sum(requests), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),
       sum(errors)
FROM usage_minute GROUP BY 1, 2, 3, 4;

INSERT INTO usage_day
SELECT project_id, date_bin('1 day', hour, TIMESTAMPTZ 'epoch'), key_id, model,
       sum(requests), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),
       sum(errors)
FROM usage_hour GROUP BY 1, 2, 3, 4;
