-- usage_minute partitioned by UTC day, so that minute rows past their retention
-- (TOLLGATE_METERING_MINUTE_RETENTION_DAYS, 35 by default) are dropped a day at a time
-- (shared/exactly_once/partitions.py); hours and days (usage_hour, usage_day) are kept for
-- ever. The days of the rows there are, up to two days ahead, are made here; the consumer makes
-- the others as it needs them.
ALTER TABLE usage_minute RENAME TO usage_minute_before_days;
ALTER INDEX usage_minute_pkey RENAME TO usage_minute_before_days_pkey;

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
    PRIMARY KEY (project_id, minute, key_id, model)
) PARTITION BY RANGE (minute);

DO $$
DECLARE
    day date;
BEGIN
    SELECT least(min(minute AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date)
    INTO day FROM usage_minute_before_days;
    day := coalesce(day, (now() AT TIME ZONE 'UTC')::date);
    WHILE day <= greatest((SELECT max(minute AT TIME ZONE 'UTC')::date
                           FROM usage_minute_before_days),
                          (now() AT TIME ZONE 'UTC')::date + 2) LOOP
        EXECUTE format(
            'CREATE TABLE %I (LIKE usage_minute INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
            'usage_minute_d' || to_char(day, 'YYYYMMDD'));
        EXECUTE format(
            'ALTER TABLE usage_minute ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            'usage_minute_d' || to_char(day, 'YYYYMMDD'),
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
        day := day + 1;
    END LOOP;
END
$$;

INSERT INTO usage_minute SELECT * FROM usage_minute_before_days;
DROP TABLE usage_minute_before_days;
