-- processed_events partitioned by day of its event ids' time (a UUIDv7's first 48 bits are
-- its Unix milliseconds), so that ids past the dedupe window are dropped a day at a time
-- (shared/exactly_once/partitions.py) instead of deleted row by row. The primary key stays the
-- event id alone: an id is unique across every day. The days of the ids there are now, up to
-- two days ahead, are made here; the consumer makes the others as it needs them. Ids that are
-- not UUIDv7, or whose time is over a year off, cannot be placed in a day: not kept (no
-- Tollgate producer writes them).
ALTER TABLE processed_events RENAME TO processed_events_before_days;
ALTER INDEX IF EXISTS processed_events_pkey RENAME TO processed_events_before_days_pkey;
DROP INDEX IF EXISTS processed_events_seen_at;

CREATE TABLE processed_events (
    event_id uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (event_id);

CREATE OR REPLACE FUNCTION pg_temp.uuid7_floor(moment timestamptz) RETURNS uuid LANGUAGE sql AS $$
    SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-0000-0000-000000000000')::uuid
    FROM (SELECT lpad(to_hex((extract(epoch FROM moment) * 1000)::bigint), 12, '0') AS h) AS x
$$;

CREATE OR REPLACE FUNCTION pg_temp.uuid7_moment(id uuid) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT to_timestamp(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                        / 1000.0)
$$;

DO $$
DECLARE
    first_day date;
    day date;
BEGIN
    SELECT least(min(pg_temp.uuid7_moment(event_id)), now())::date INTO first_day
    FROM processed_events_before_days
    WHERE substr(event_id::text, 15, 1) = '7'
      AND pg_temp.uuid7_moment(event_id) BETWEEN now() - interval '400 days'
                                             AND now() + interval '2 days';
    first_day := coalesce(first_day, (now() AT TIME ZONE 'UTC')::date);
    day := first_day;
    WHILE day <= (now() AT TIME ZONE 'UTC')::date + 2 LOOP
        EXECUTE format(
            'CREATE TABLE %I (LIKE processed_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
            'processed_events_d' || to_char(day, 'YYYYMMDD'));
        EXECUTE format(
            'ALTER TABLE processed_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            'processed_events_d' || to_char(day, 'YYYYMMDD'),
            pg_temp.uuid7_floor(day::timestamp AT TIME ZONE 'UTC'),
            pg_temp.uuid7_floor((day + 1)::timestamp AT TIME ZONE 'UTC'));
        day := day + 1;
    END LOOP;
END
$$;

-- Every id that chose first_day above has its day now.
INSERT INTO processed_events
SELECT event_id, seen_at FROM processed_events_before_days
WHERE substr(event_id::text, 15, 1) = '7'
  AND pg_temp.uuid7_moment(event_id) BETWEEN now() - interval '400 days'
                                         AND now() + interval '2 days'
  AND pg_temp.uuid7_moment(event_id)
      < ((now() AT TIME ZONE 'UTC')::date + 3)::timestamp AT TIME ZONE 'UTC';

DROP TABLE processed_events_before_days;
